"""The ``gr.Blocks`` page: upload a scan or click an example -> TorchServe's answer.

Imports neither torch nor any model code; the page only speaks HTTP to TorchServe
(:mod:`lightning_app.ui.client`). The scan's bytes are sent unchanged to
``/explanations/<model>``, whose answer is the prediction plus a heatmap: the page shows the
calibrated probabilities, the heatmap over the scan (toggle and opacity redraw it locally,
without another request) and a warning banner when the server's out-of-distribution guard
says the image does not look like the training scans. With ``REGISTRY`` set, the health badge
and every answer name the model registry version that ``REGISTRY_ALIAS`` points at, and say
whether the served model is it (:mod:`lightning_app.ui.provenance`).
"""

import html
from pathlib import Path
from typing import Any

import gradio as gr

from lightning_app.ui.client import Health, InferenceError, ModelInfo, Prediction, TorchServeClient
from lightning_app.ui.overlay import overlay
from lightning_app.ui.provenance import Provenance, RegistryWatch
from lightning_app.ui.settings import Settings

EXAMPLES_DIR = Path(__file__).parent / "examples"
MAX_FILE_SIZE = "20mb"
HEALTH_EVERY_S = 15.0
TITLE = "Brain-MRI tumour classifier"


def example_scans() -> list[Path]:
    """Return the bundled held-out scans, named ``<class>-<original name>.jpg``."""
    return sorted(EXAMPLES_DIR.glob("*.jpg"))


def example_caption(path: Path) -> str:
    """``tumor-y1285.jpg`` -> ``tumor (y1285)``: the true class of a bundled example."""
    label, _, original = path.stem.partition("-")
    return f"{label} ({original})" if original else label


def render_prediction(prediction: Prediction, provenance: Provenance | None = None) -> str:
    """Markdown: the predicted class, every class's probability, model, registry version, latency."""
    rows = "\n".join(f"| {name} | {p:.4f} |" for name, p in prediction.probabilities.items())
    version = f" version `{prediction.model_version}`" if prediction.model_version else ""
    lines = [f"Model `{prediction.model_name}`{version} · round trip {prediction.latency_ms:.0f} ms"]
    if provenance is not None:
        mark = "**Warning:** " if provenance.matches(prediction.model_version) is False else ""
        said = provenance.describe(prediction.model_version)
        lines.append(f"{mark}{said[:1].upper()}{said[1:]}")
    if prediction.decision is not None:
        decision = prediction.decision
        lines.append(
            f"Screening decision: **{decision.label}** (score {decision.score:.3f}, threshold "
            f"{decision.threshold:.3f}; {decision.target})"
        )
    if prediction.in_distribution is not None:
        guard = prediction.in_distribution
        verdict = "like the training scans" if guard.ok else "**unlike the training scans**"
        lines.append(
            f"Out-of-distribution score {guard.score:.1f} (threshold {guard.threshold:.1f}): {verdict}"
        )
    if prediction.heatmap is not None:
        method = {
            "cam": "CAM",
            "grad-cam": "Grad-CAM",
            "layer-cam": "LayerCAM",
            "gradient-input": "gradient x input",
            "occlusion": "occlusion",
        }.get(prediction.heatmap.method, prediction.heatmap.method)
        lines.append(
            f"Heatmap: {method} for class **{prediction.heatmap.target}** (red = strongest evidence)"
        )
    return (
        f"### Prediction: **{prediction.label}**\n\n| class | calibrated probability |\n|---|---|\n{rows}\n\n"
        + "  \n".join(lines)
    )


def render_warning(prediction: Prediction | None) -> dict[str, Any]:
    """The banner (an update of a ``gr.HTML``): shown only when the server flags the image."""
    guard = prediction.in_distribution if prediction is not None else None
    if prediction is None or guard is None or guard.ok:
        return gr.update(value="", visible=False)
    text = html.escape(
        prediction.warning or "This image does not look like the brain MRIs the model was trained on."
    )
    return gr.update(
        value=(
            '<div role="alert" style="background:#fef3c7;border:2px solid #b45309;color:#78350f;'
            f'padding:12px;border-radius:8px;font-weight:bold">&#9888; {text}</div>'
        ),
        visible=True,
    )


def render_error(message: str) -> str:
    """Markdown for a failed prediction: one readable sentence, no traceback."""
    return f"### Could not classify the scan\n\n{message}"


def render_health(
    health: Health, info: ModelInfo | None, settings: Settings, provenance: Provenance | None = None
) -> str:
    """Render the health badge (HTML): ``/ping``, then what is known of the served model.

    That is its version and ready workers (management API) and the registry version that the
    alias names, compared with the served one when known.
    """
    colour, word = ("#15803d", "healthy") if health.healthy else ("#b91c1c", "not healthy")
    url = html.escape(settings.inference_url)
    text = f"TorchServe {word} ({html.escape(health.status)}) at <code>{url}</code>"
    if info is not None:
        version = f" version {html.escape(info.version)}" if info.version else ""
        text += (
            f" · model <code>{html.escape(info.name)}</code>{version},"
            f" {info.workers_ready}/{info.workers_total} workers ready"
        )
    if provenance is not None:
        text += f" · {html.escape(provenance.describe(info.version if info else None))}"
    return f'<span style="color:{colour};font-weight:bold">&#9679;</span> {text}'


#: What one classification updates: result, probabilities, picture, warning banner, state.
Outcome = tuple[str, dict[str, float] | None, Any, dict[str, Any], dict[str, Any] | None]


def build_app(
    settings: Settings, client: TorchServeClient | None = None, registry: RegistryWatch | None = None
) -> gr.Blocks:
    """Build the page, wired to ``client`` and ``registry`` (default: made from ``settings``)."""
    api = client or TorchServeClient(settings)
    if registry is None and settings.registry:
        registry = RegistryWatch(settings.registry, settings.registry_alias)
    examples = example_scans()

    def classify(scan: str | None, show: bool = True, opacity: float = 0.5) -> Outcome:
        """One scan -> (result markdown, probabilities, scan with heatmap, warning banner, state)."""
        if not scan:
            message = render_error("No file received: upload a brain-MRI scan (JPEG or PNG).")
            return message, None, None, render_warning(None), None
        try:
            data = Path(scan).read_bytes()
            prediction = api.explain(data)
        except InferenceError as exc:
            return render_error(str(exc)), None, None, render_warning(None), None
        except OSError:
            message = render_error("The uploaded file could not be read: please upload it again.")
            return message, None, None, render_warning(None), None
        heatmap = prediction.heatmap.png if prediction.heatmap else None
        state = {"scan": scan, "heatmap": heatmap}
        picture = overlay(Path(scan), heatmap, show=show, opacity=opacity)
        return (
            render_prediction(prediction, registry.current() if registry else None),
            prediction.probabilities,
            picture,
            render_warning(prediction),
            state,
        )

    def classify_example(show: bool, opacity: float, evt: gr.SelectData) -> tuple[Any, ...]:
        """Classify the bundled example the user clicked (and clear the upload box)."""
        index = evt.index if isinstance(evt.index, int) else 0
        return (*classify(str(examples[index]), show, opacity), None)

    def redraw(state: dict[str, Any] | None, show: bool, opacity: float) -> Any:
        """Redraw the picture for the heatmap toggle / opacity, without asking the server again."""
        if not state:
            return gr.update()
        return overlay(Path(state["scan"]), state["heatmap"], show=show, opacity=opacity)

    def refresh() -> tuple[str, Any, dict[str, Any] | None]:
        """Health badge, and the management API's metadata (hidden when unreachable)."""
        info = api.model_info()
        badge = render_health(api.ping(), info, settings, registry.current() if registry else None)
        return badge, gr.update(visible=info is not None), None if info is None else info.raw

    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(600, 3600)) as page:
        gr.Markdown(
            f"# {TITLE}\nUpload a brain MRI (or click an example): the page sends the file unchanged "
            f"to TorchServe's `/explanations/{settings.model_name}` and shows its answer, with a heatmap "
            "of where the model found evidence for its class."
        )
        with gr.Row():
            health = gr.HTML("checking TorchServe…", elem_id="health")
            check = gr.Button("Check again", size="sm", scale=0, elem_id="check")
        with gr.Row():
            with gr.Column():
                scan = gr.File(label="MRI scan (JPEG or PNG)", type="filepath", elem_id="scan")
                gallery = gr.Gallery(
                    value=[(str(p), example_caption(p)) for p in examples],
                    label="Held-out examples (click one)",
                    columns=4,
                    rows=1,
                    height=190,
                    allow_preview=False,
                    interactive=False,
                    elem_id="examples",
                )
            with gr.Column():
                warning = gr.HTML("", visible=False, elem_id="ood-warning")
                result = gr.Markdown("Upload a scan to see the model's answer.", elem_id="result")
                probabilities = gr.Label(label="Calibrated class probabilities", elem_id="probabilities")
                preview = gr.Image(
                    label="Scan (heatmap: where the model found evidence)",
                    interactive=False,
                    height=320,
                    format="png",
                    elem_id="preview",
                )
                with gr.Row():
                    show = gr.Checkbox(value=True, label="Show heatmap", elem_id="show-heatmap")
                    opacity = gr.Slider(
                        0.0, 1.0, value=0.5, step=0.05, label="Heatmap opacity", elem_id="opacity"
                    )
        state = gr.State(None)
        with gr.Accordion(
            "Served model (TorchServe management API)", open=False, visible=False, elem_id="model-meta"
        ) as meta_box:
            meta = gr.JSON(elem_id="model-info")
        outputs = [result, probabilities, preview, warning, state]
        scan.upload(classify, inputs=[scan, show, opacity], outputs=outputs)
        gallery.select(
            classify_example, inputs=[show, opacity], outputs=[*outputs, scan], api_visibility="private"
        )
        for control in (show.change, opacity.release):
            control(redraw, inputs=[state, show, opacity], outputs=preview, api_visibility="private")
        for trigger in (page.load, check.click, gr.Timer(HEALTH_EVERY_S).tick):
            trigger(
                refresh, outputs=[health, meta_box, meta], api_visibility="private", show_progress="hidden"
            )
    return page


def launch_options(settings: Settings) -> dict[str, Any]:
    """``Blocks.launch`` keyword arguments for ``settings`` (shared by :func:`serve` and tests)."""
    return {
        "server_name": settings.host,
        "server_port": settings.port,
        "max_file_size": MAX_FILE_SIZE,
        "show_error": False,
        "footer_links": ["api"],
        "quiet": True,  # the caller prints the URL; no "public link" hint
    }


def serve(settings: Settings) -> None:
    """Build the page and serve it until interrupted."""
    page = build_app(settings)
    page.queue(default_concurrency_limit=8)
    page.launch(**launch_options(settings))
