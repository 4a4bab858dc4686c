"""HTTP server and JSON API of the prompt page (``dsmoe app``); standard library only, model calls as a user makes them.

``App`` holds the state of one local session (the loaded model, the uploaded images, the last results) and does the
work; ``Handler`` maps requests to it and turns every failure into ``{"error": "..."}`` with a 4xx/5xx status:

=======  ======================  =====================================================================================
method   path                    body -> answer
=======  ======================  =====================================================================================
GET      ``/``                   the page (``page.html``)
GET      ``/api/state``          -> the command line's ``model=``, the loaded model (or why it failed), the limits
POST     ``/api/load``           ``{"model": path}`` -> names, open-vocabulary or not, why prompts are disabled
POST     ``/api/clear``          forget the uploaded images
POST     ``/api/image?name=``    the image file's bytes (``application/octet-stream``) -> id, width, height
POST     ``/api/detect``         ``{"images": [ids], "prompts": text, "visual": [boxes], "conf", "iou"}`` -> results
GET      ``/api/export?format=`` ``yolo`` (a zip of YOLO labels, one ``.txt`` per image) or ``csv`` of the last results
=======  ======================  =====================================================================================

POST bodies must carry their content type (``application/json``, ``application/octet-stream``): a browser sends those
from another site only after a CORS preflight, which this server never grants, so other web pages cannot drive it.
"""

from __future__ import annotations

import csv
import io
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np

from dsmoe_yolo.errors import ConfigError
from dsmoe_yolo.names import ordered_names

__all__ = (
    "App",
    "Handler",
    "Server",
    "RequestError",
    "make_server",
    "serve",
    "parse_prompts",
    "image_size",
    "decode_image",
    "routing_tables",
    "yolo_labels",
    "results_csv",
    "CLOSED_SET",
    "MAX_PIXELS",
)

PAGE = Path(__file__).with_name("page.html")
MAX_PIXELS = 40_000_000  # larger images are refused with a message, never downscaled silently
MAX_BODY = 256 * 1024 * 1024  # bytes of one request (an uncompressed 40-megapixel BMP is 120 MB)
MAX_IMAGES = 64  # images held at once
CLOSED_SET = (
    "this model's head is closed-set: its classes are fixed by training; train an open-vocabulary model "
    "(dsmoe-ov-*.yaml) to prompt it"
)


class RequestError(Exception):
    """A request the app refuses: ``status`` (HTTP) and a one-line message for the page."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse_prompts(text: str | None):
    """The textarea's prompts as ``set_classes`` takes them: None when empty (keep the model's classes).

    One class per line, ``name`` or ``name: description``; a name on several lines collects their descriptions.
    Without any description the result is the list of names (``set_classes`` words them from templates); else a
    ``{name: [descriptions]}`` mapping, names without one described by the same template.
    """
    from dsmoe_yolo.text.embed import template_prompts

    table: dict[str, list[str]] = {}
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        name, _, description = line.partition(":")
        table.setdefault(name.strip(), [])
        if description.strip():
            table[name.strip()].append(description.strip())
    if not any(table.values()):
        return list(table) or None
    return {n: d or template_prompts([n])[n] for n, d in table.items()}


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from an image file's header (nothing decoded); None if it is no PNG, JPEG, BMP, TIFF or WebP.

    Pillow's format readers are called directly: ``PIL.Image.open``, as Ultralytics patches it, would try to
    install a HEIF plugin from PyPI on the first file it cannot identify.
    """
    from PIL import BmpImagePlugin, JpegImagePlugin, PngImagePlugin, TiffImagePlugin, WebPImagePlugin

    readers = {
        b"\x89PNG\r\n\x1a\n": PngImagePlugin.PngImageFile,
        b"\xff\xd8\xff": JpegImagePlugin.JpegImageFile,
        b"BM": BmpImagePlugin.BmpImageFile,
        b"II*\x00": TiffImagePlugin.TiffImageFile,
        b"MM\x00*": TiffImagePlugin.TiffImageFile,
    }
    webp = data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    reader = (
        WebPImagePlugin.WebPImageFile if webp else next((r for m, r in readers.items() if data.startswith(m)), None)
    )
    if reader is None:
        return None
    try:
        with reader(io.BytesIO(data)) as im:
            return im.size
    except Exception:  # a broken header: Pillow raises SyntaxError, OSError, struct.error, ... by format
        return None


def decode_image(name: str, data: bytes) -> np.ndarray:
    """An uploaded file as the (H, W, 3) BGR array ``cv2.imread`` gives, refusing non-images and huge images.

    The size is read from the file's header before anything is decoded.
    """
    import cv2

    size = image_size(data)
    if size is None:
        raise RequestError(415, f"'{name}' is not an image (PNG, JPEG, BMP, TIFF or WebP)")
    w, h = size
    if w * h > MAX_PIXELS:
        raise RequestError(
            413,
            f"'{name}' is {w}x{h} = {w * h / 1e6:.1f} megapixels; the app takes at most {MAX_PIXELS / 1e6:.0f} "
            "(nothing is downscaled for you: resize it first)",
        )
    im = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if im is None:
        raise RequestError(415, f"'{name}' could not be decoded as an image")
    return im


def _number(body: dict, key: str, default: float) -> float:
    """A threshold in [0, 1] from the request."""
    value = body.get(key, default)
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise RequestError(400, f"{key} must be a number from 0 to 1, got {body.get(key)!r}")
    return value


def _box(box, name: str) -> list[float]:
    """An example box from the page: four finite numbers (pixels); ``set_classes`` checks it against its image."""
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        values = []
    if len(values) != 4 or not np.isfinite(values).all():
        raise RequestError(400, f"an example box of '{name}' is not [x1, y1, x2, y2] in pixels: {box!r}")
    return values


def _unique_stems(names: list[str]) -> list[str]:
    """One label file name per image: the image's stem, numbered when two images share it."""
    out, seen = [], {}
    for name in names:
        stem = Path(name).stem or "image"
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem] - 1}")
    return out


def yolo_labels(images: list[dict]) -> bytes:
    """A zip of YOLO-format labels (``class x_center y_center width height``, normalised), one ``.txt`` per image."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for stem, image in zip(_unique_stems([i["name"] for i in images]), images):
            w, h = image["width"], image["height"]
            lines = []
            for d in image["detections"]:
                x1, y1, x2, y2 = d["box"]
                lines.append(
                    f"{d['cls']} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
                )
            zf.writestr(f"{stem}.txt", "".join(f"{line}\n" for line in lines))
    return buffer.getvalue()


def results_csv(images: list[dict]) -> bytes:
    """The detections as CSV: image, class, conf, x1, y1, x2, y2 (pixels)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["image", "class", "conf", "x1", "y1", "x2", "y2"])
    for image in images:
        for d in image["detections"]:
            writer.writerow([image["name"], d["name"], f"{d['conf']:.6g}", *(f"{v:.2f}" for v in d["box"])])
    return out.getvalue().encode("utf-8")


def routing_tables(logged: list[dict], labels: list[str]) -> list[dict]:
    """Images x experts counts per SparseMoE layer from one ``pop_routing()`` per image (``RoutingStats`` rows).

    Each image is its own row of the validation report's ``RoutingStats``; ``total`` is the load of every expert.
    """
    from dsmoe_yolo.routing_report import RoutingStats

    layers: dict = {}
    for row, per_image in enumerate(logged):
        for module, batches in per_image.items():
            key = getattr(module, "i", id(module))
            if key not in layers:
                kinds = [getattr(e, "kind", "?") for e in module.experts]
                layers[key] = (RoutingStats(labels, len(kinds), kinds), int(getattr(module, "top_k", 0)))
            layers[key][0].add(batches[-1].numpy(), [np.array([row])])  # one forward per image
    return [
        {
            "layer": layer,
            "top_k": k,
            "experts": [f"e{e}{kind[0]}" for e, kind in enumerate(stats.kinds)],
            "kinds": stats.kinds,
            "images": labels,
            "counts": stats.counts[: len(labels)].tolist(),  # the background row stays empty here
            "total": stats.load.tolist(),
            "summary": stats.summary(layer, k),
        }
        for layer, (stats, k) in sorted(layers.items(), key=lambda kv: str(kv[0]))
    ]


class App:
    """One local session: the loaded model, the uploaded images and the last results (thread-safe).

    Args:
        model (str): The checkpoint given on the command line (the page's default path).
    """

    def __init__(self, model: str = ""):
        self.default_model = str(model or "")
        self.model = None
        self.info: dict = {}
        self.load_error = ""
        self.images: dict[str, dict] = {}
        self.last: list[dict] | None = None  # the images of the last Detect, with their detections
        self._prompts_key = None
        self._next_id = 0
        self._lock = threading.Lock()

    def state(self) -> dict:
        """What the page needs when it opens."""
        return {
            "default_model": self.default_model,
            "model": self.info or None,
            "load_error": self.load_error,
            "max_megapixels": MAX_PIXELS / 1e6,
        }

    def load(self, path: str) -> dict:
        """Load a detector checkpoint (``YOLO(path)``); return its names and whether it takes prompts."""
        path = str(path or "").strip()
        with self._lock:
            self.load_error = ""
            try:
                self.model, self.info = self._open(path)
            except RequestError as e:
                self.load_error = str(e)
                raise
            self._prompts_key, self.last = None, None
            return self.info

    @staticmethod
    def _open(path: str):
        if not path:
            raise RequestError(400, "type the path of a checkpoint (.pt) to load")
        if not Path(path).expanduser().is_file():
            raise RequestError(404, f"checkpoint '{path}' not found")
        if Path(path).suffix != ".pt":
            raise RequestError(400, f"'{path}' is not a PyTorch checkpoint (.pt): pick a best.pt / last.pt")
        from ultralytics import YOLO

        from dsmoe_yolo.text.binding import is_open_vocabulary

        try:
            model = YOLO(str(Path(path).expanduser()))
        except Exception as e:
            raise RequestError(400, f"'{path}' cannot be loaded as a checkpoint: {_one_line(e)}") from None
        if model.task != "detect":
            raise RequestError(400, f"'{path}' is a {model.task} model, not a detector: load a detection checkpoint")
        open_vocabulary = is_open_vocabulary(model)
        return model, _model_info(path, model, open_vocabulary)

    def clear(self) -> dict:
        """Forget the uploaded images."""
        with self._lock:
            self.images.clear()
            return {"images": 0}

    def add_image(self, name: str, data: bytes) -> dict:
        """Keep one uploaded image; return its id and size."""
        name = Path(name or "image").name or "image"
        im = decode_image(name, data)
        with self._lock:
            if len(self.images) >= MAX_IMAGES:
                raise RequestError(413, f"at most {MAX_IMAGES} images at a time: detect these, then upload more")
            self._next_id += 1
            image_id = str(self._next_id)
            self.images[image_id] = {"name": name, "array": im}
        return {"id": image_id, "name": name, "width": im.shape[1], "height": im.shape[0]}

    def detect(self, body: dict) -> dict:
        """Apply the prompts (if any), predict every listed image, count per class and tabulate the routing."""
        conf, iou = _number(body, "conf", 0.25), _number(body, "iou", 0.7)
        with self._lock:
            if self.model is None:
                raise RequestError(409, "load a checkpoint first")
            ids = [str(i) for i in body.get("images") or []]
            if not ids:
                raise RequestError(400, "upload at least one image")
            if any(i not in self.images for i in ids):
                raise RequestError(410, "an image is no longer on the server: upload the images again")
            self._apply_prompts(body.get("prompts"), body.get("visual") or [])
            images, routing = self._predict(ids, conf, iou)
            names = _names(self.model)
            counts = {n: 0 for n in names}
            for image in images:
                for d in image["detections"]:
                    counts[d["name"]] = counts.get(d["name"], 0) + 1
            self.last = images
            return {
                "names": names,
                "images": images,
                "counts": [{"name": n, "count": c} for n, c in counts.items()],
                "routing": routing,
                "conf": conf,
                "iou": iou,
            }

    def _apply_prompts(self, text, visual: list) -> None:
        """``set_classes`` with the typed and boxed prompts; nothing to do when both are empty or unchanged."""
        spec, boxes = parse_prompts(text), self._visual(visual)
        if spec is None and not boxes:
            return
        if not self.info.get("open_vocabulary"):
            raise RequestError(400, CLOSED_SET)
        key = json.dumps([spec, visual], sort_keys=True, default=str)
        if key == self._prompts_key:
            return
        if boxes:
            self.model.set_classes(spec or [], visual=boxes)
        else:
            self.model.set_classes(spec)
        # YOLO hands set_classes to its DetectionModel, which cannot drop the wrapper's predictor: one built by an
        # earlier predict would keep the old classes (YOLOWorld.set_classes resets it the same way)
        self.model.predictor = None
        self._prompts_key = key
        self.info["names"] = _names(self.model)

    def _visual(self, visual: list) -> dict:
        """The page's boxes ``[{"image": id, "name": class, "box": [x1, y1, x2, y2]}]`` as ``set_classes(visual=)``."""
        grouped: dict[str, dict[str, list]] = {}
        for item in visual:
            name = str(item.get("name") or "").strip() if isinstance(item, dict) else ""
            if not name:
                raise RequestError(400, "every example box needs a class name")
            image_id = str(item.get("image"))
            if image_id not in self.images:
                raise RequestError(410, f"the image of an example box of '{name}' is gone: upload it again")
            grouped.setdefault(name, {}).setdefault(image_id, []).append(_box(item.get("box"), name))
        return {
            name: [{"image": self.images[i]["array"], "boxes": boxes} for i, boxes in per_image.items()]
            for name, per_image in grouped.items()
        }

    def _predict(self, ids: list[str], conf: float, iou: float) -> tuple[list[dict], list[dict]]:
        """``model.predict`` per image with the routing capture on; detections and routing tables."""
        from dsmoe_yolo.nn.base import pop_routing, set_routing_capture

        names, images, logged = _names(self.model), [], []
        set_routing_capture(True)
        try:
            for image_id in ids:
                image = self.images[image_id]
                pop_routing()
                result = self.model.predict(image["array"], conf=conf, iou=iou, verbose=False)[0]
                logged.append(pop_routing())
                images.append(_image_result(image_id, image, result, names))
        finally:
            set_routing_capture(False)
        return images, routing_tables(logged, [i["name"] for i in images])

    def export(self, fmt: str) -> tuple[str, str, bytes]:
        """The last results as ``(file name, content type, bytes)``: ``yolo`` labels zip or ``csv``."""
        writers = {
            "yolo": ("dsmoe-labels.zip", "application/zip", yolo_labels),
            "csv": ("dsmoe-detections.csv", "text/csv; charset=utf-8", results_csv),
        }
        if fmt not in writers:
            raise RequestError(400, f"format must be yolo or csv, got {fmt!r}")
        filename, content_type, write = writers[fmt]
        with self._lock:
            if self.last is None:
                raise RequestError(409, "nothing to download yet: press Detect first")
            return filename, content_type, write(self.last)


def _names(model) -> list[str]:
    return ordered_names(model.names)


def _model_info(path: str, model, open_vocabulary: bool) -> dict:
    return {
        "path": path,
        "names": _names(model),
        "open_vocabulary": open_vocabulary,
        "prompt_note": "" if open_vocabulary else CLOSED_SET,
    }


def _image_result(image_id: str, image: dict, result, names: list[str]) -> dict:
    """One image's detections from a ``Results`` object (``boxes.xyxy / .cls / .conf``)."""
    boxes = result.boxes
    xyxy, cls, conf = (t.cpu().numpy().tolist() for t in (boxes.xyxy, boxes.cls, boxes.conf))
    h, w = image["array"].shape[:2]
    detections = [
        {"cls": int(c), "name": names[int(c)] if int(c) < len(names) else str(int(c)), "conf": float(p), "box": b}
        for b, c, p in zip(xyxy, cls, conf)
    ]
    return {"id": image_id, "name": image["name"], "width": w, "height": h, "detections": detections}


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:500] or type(e).__name__


class Handler(BaseHTTPRequestHandler):
    """Routes requests to ``server.app``; every answer is the page, a file, or JSON (``{"error"}`` on failure)."""

    server_version = "dsmoe-app"

    def log_message(self, format, *args):
        """Quiet: the terminal shows only the address and errors."""

    def do_GET(self):
        """The page, the state, or a download."""
        url = urlparse(self.path)
        if url.path in ("/", "/index.html"):
            return self._send(200, "text/html; charset=utf-8", PAGE.read_bytes())
        if url.path == "/api/state":
            return self._guard(self.server.app.state)
        if url.path == "/api/export":
            fmt = parse_qs(url.query).get("format", [""])[0]
            return self._guard(lambda: self._download(*self.server.app.export(fmt)), json_answer=False)
        return self._error(404, f"no page {url.path}")

    def do_POST(self):
        """The API calls that change the session."""
        url = urlparse(self.path)
        routes = {
            "/api/load": self._load,
            "/api/clear": self._clear,
            "/api/image": lambda: self.server.app.add_image(
                parse_qs(url.query).get("name", ["image"])[0], self._bytes()
            ),
            "/api/detect": lambda: self.server.app.detect(self._json()),
        }
        if url.path not in routes:
            return self._error(404, f"no API call {url.path}")
        return self._guard(routes[url.path])

    def _load(self) -> dict:
        return self.server.app.load(self._json().get("model"))

    def _clear(self) -> dict:
        self._json()  # a JSON body, as every POST: no cross-site form can send it
        return self.server.app.clear()

    def _guard(self, call, json_answer: bool = True):
        """Run one request; map refusals, bad prompts and anything unexpected to a JSON error."""
        try:
            out = call()
        except RequestError as e:
            return self._error(e.status, str(e))
        except ConfigError as e:
            return self._error(400, _one_line(e))
        except Exception as e:  # a request must never kill the server or leave the page without an answer
            self.server.log_failure(self.path, e)
            return self._error(500, f"{type(e).__name__}: {_one_line(e)}")
        if json_answer:
            self._send(200, "application/json", json.dumps(out).encode("utf-8"))

    def _body(self, content_type: str) -> bytes:
        sent = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if sent != content_type:
            raise RequestError(415, f"send the body as {content_type}")
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit():
            raise RequestError(400, f"bad Content-Length {length!r}")
        length = int(length)
        if length > MAX_BODY:
            self.close_connection = True
            raise RequestError(413, f"request of {length / 2**20:.0f} MiB is over the {MAX_BODY // 2**20} MiB limit")
        return self.rfile.read(length)

    def _json(self) -> dict:
        try:
            body = json.loads(self._body("application/json") or b"{}")
        except json.JSONDecodeError:
            raise RequestError(400, "the request body is not JSON") from None
        if not isinstance(body, dict):
            raise RequestError(400, "the request body must be a JSON object")
        return body

    def _bytes(self) -> bytes:
        data = self._body("application/octet-stream")
        if not data:
            raise RequestError(400, "the uploaded file is empty")
        return data

    def _download(self, filename: str, content_type: str, data: bytes) -> None:
        self._send(200, content_type, data, {"Content-Disposition": f'attachment; filename="{filename}"'})

    def _error(self, status: int, message: str) -> None:
        self._send(status, "application/json", json.dumps({"error": message}).encode("utf-8"))

    def _send(self, status: int, content_type: str, data: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


class Server(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` carrying the ``App`` (requests that touch the model take its lock in turn)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: App):
        super().__init__(address, Handler)
        self.app = app

    def log_failure(self, path: str, error: BaseException) -> None:
        """Print an unexpected failure with its traceback to the terminal (the page gets one line)."""
        import sys
        import traceback

        print(f"dsmoe app: {path} failed:", file=sys.stderr)
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)


def make_server(model: str = "", port: int = 8501, host: str = "127.0.0.1", app: App | None = None) -> Server:
    """A server bound to ``host:port`` (port 0: a free one), not yet serving; ``server.app`` is its ``App``.

    Raises:
        ConfigError: If the port is not a port number or cannot be bound (in use, or not allowed).
    """
    if not str(port).isdigit() or int(port) > 65535:
        raise ConfigError(f"port must be a number from 0 to 65535, got {port!r}")
    try:
        return Server((str(host), int(port)), app or App(model))
    except OSError as e:
        raise ConfigError(
            f"cannot listen on {host}:{port} ({e.strerror or e}); pick another port, e.g. port=8502"
        ) from None


def serve(model: str = "", port: int = 8501, host: str = "127.0.0.1") -> None:
    """``dsmoe app``: load ``model`` (a failure is shown on the page), then serve the page until Ctrl+C."""
    server = make_server(model, port, host)
    if model:
        try:
            server.app.load(str(model))
        except RequestError as e:
            print(f"dsmoe app: {e} (pick another on the page)")
    address = f"http://{host}:{server.server_address[1]}"
    print(f"dsmoe app: open {address} in a browser (Ctrl+C stops it)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
