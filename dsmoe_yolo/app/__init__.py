"""A prompt page: try a DS-MoE checkpoint in the browser, on this machine.

    dsmoe app model=best.pt [port=8501 host=127.0.0.1]

opens a local web page (print-out: its address) where you pick a checkpoint, upload images, type class prompts
(``name: description``, one per line) or drag example boxes on an image as visual prompts, set confidence and IoU,
and see the detections drawn on each image, a per-class count table and the expert-usage heat-map of the images
(which of the SparseMoE layers' experts each image was routed to). The results download as YOLO-format labels (a zip
with one ``.txt`` per image) or as CSV. Only open-vocabulary checkpoints (``dsmoe-ov-*.yaml``) take prompts; a
closed-set one shows its fixed classes and says why.

Why the standard library (``http.server``, one HTML page with vanilla JavaScript and a ``<canvas>``) and not
Streamlit (Ultralytics' own inference app) or Gradio (the YOLO-World / YOLOE demos): it works offline, adds no
dependency (both of those bring large dependency trees), downloads nothing at run time (no web fonts, no scripts
from a CDN), and the page calls exactly what a Python user calls: ``YOLO(path)``, ``model.set_classes(...)``,
``model.predict(image, conf=..., iou=...)`` and the routing capture of ``dsmoe_yolo.nn.base``. What you see on the
page is what ``model.predict`` gives.

The server listens on 127.0.0.1 by default. It has no authentication and loads any checkpoint path typed into the
page (a checkpoint is a pickle: loading one runs code), so ``host=0.0.0.0`` opens that to everyone on your network.
"""

from __future__ import annotations

from dsmoe_yolo.app.server import App, make_server, serve

__all__ = ("App", "make_server", "serve")
