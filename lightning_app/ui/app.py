"""The ``gr.Blocks`` page: upload a scan or click an example -> TorchServe's answer.

Imports neither torch nor any model code; the page only speaks HTTP to TorchServe
(:mod:`lightning_app.ui.client`). The scan's bytes are sent unchanged.
"""

import html
from pathlib import Path
from typing import Any

import gradio as gr

from lightning_app.ui.client import Health, InferenceError, ModelInfo, Prediction, TorchServeClient
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


def render_prediction(prediction: Prediction) -> str:
    """Markdown: the predicted class, every class's probability, model and latency."""
    rows = "\n".join(f"| {name} | {p:.4f} |" for name, p in prediction.probabilities.items())
    version = f" version `{prediction.model_version}`" if prediction.model_version else ""
    return (
        f"### Prediction: **{prediction.label}**\n\n| class | probability |\n|---|---|\n{rows}\n\n"
        f"Model `{prediction.model_name}`{version} · round trip {prediction.latency_ms:.0f} ms"
    )


def render_error(message: str) -> str:
    """Markdown for a failed prediction: one readable sentence, no traceback."""
    return f"### Could not classify the scan\n\n{message}"


def render_health(health: Health, info: ModelInfo | None, settings: Settings) -> str:
    """Render the health badge (HTML): ``/ping``, and the model version and ready workers when known."""
    colour, word = ("#15803d", "healthy") if health.healthy else ("#b91c1c", "not healthy")
    url = html.escape(settings.inference_url)
    text = f"TorchServe {word} ({html.escape(health.status)}) at <code>{url}</code>"
    if info is not None:
        version = f" version {html.escape(info.version)}" if info.version else ""
        text += (
            f" · model <code>{html.escape(info.name)}</code>{version},"
            f" {info.workers_ready}/{info.workers_total} workers ready"
        )
    return f'<span style="color:{colour};font-weight:bold">&#9679;</span> {text}'


def build_app(settings: Settings, client: TorchServeClient | None = None) -> gr.Blocks:
    """Build the page, wired to ``client`` (default: a new client for ``settings``)."""
    api = client or TorchServeClient(settings)
    examples = example_scans()

    def classify(scan: str | None) -> tuple[str, dict[str, float] | None, str | None]:
        """Classify one uploaded scan: (result markdown, probabilities, preview)."""
        if not scan:
            return render_error("No file received: upload a brain-MRI scan (JPEG or PNG)."), None, None
        try:
            data = Path(scan).read_bytes()
            prediction = api.predict(data)
        except InferenceError as exc:
            return render_error(str(exc)), None, None
        except OSError:
            return render_error("The uploaded file could not be read: please upload it again."), None, None
        return render_prediction(prediction), prediction.probabilities, scan

    def classify_example(evt: gr.SelectData) -> tuple[str, dict[str, float] | None, str | None, None]:
        """Classify the bundled example the user clicked (and clear the upload box)."""
        index = evt.index if isinstance(evt.index, int) else 0
        return (*classify(str(examples[index])), None)

    def refresh() -> tuple[str, Any, dict[str, Any] | None]:
        """Health badge, and the management API's metadata (hidden when unreachable)."""
        info = api.model_info()
        badge = render_health(api.ping(), info, settings)
        return badge, gr.update(visible=info is not None), None if info is None else info.raw

    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(600, 3600)) as page:
        gr.Markdown(
            f"# {TITLE}\nUpload a brain MRI (or click an example): the page sends the file unchanged "
            f"to TorchServe's `/predictions/{settings.model_name}` and shows its answer."
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
                result = gr.Markdown("Upload a scan to see the model's answer.", elem_id="result")
                probabilities = gr.Label(label="Class probabilities", elem_id="probabilities")
                preview = gr.Image(label="Scan", interactive=False, height=256, elem_id="preview")
        with gr.Accordion(
            "Served model (TorchServe management API)", open=False, visible=False, elem_id="model-meta"
        ) as meta_box:
            meta = gr.JSON(elem_id="model-info")
        outputs = [result, probabilities, preview]
        scan.upload(classify, inputs=scan, outputs=outputs)
        gallery.select(classify_example, inputs=None, outputs=[*outputs, scan], api_visibility="private")
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
