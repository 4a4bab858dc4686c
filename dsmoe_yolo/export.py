"""Export support (ONNX symbolics), filled in with the layers that need it."""


def on_export_start(exporter):
    pass
