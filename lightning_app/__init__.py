"""Brain-MRI tumour classifier."""
