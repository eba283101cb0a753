"""albert_zh TF checkpoints -> albertzh, checked against a NumPy forward of the raw TF arrays.

The checkpoints are built here with albert_zh's exact variable names and shapes (both layouts)
by albertzh's own TensorBundle writer (tests/model/test_tf_checkpoint.py checks that writer
against real TensorFlow).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from click.testing import CliRunner

import albertzh.cli
from albertzh.errors import ConfigError, InputError, VocabMismatchError
from albertzh.model import AlbertConfig
from albertzh.model import convert as cv
from albertzh.model.tf_checkpoint import load_checkpoint, write_checkpoint

ROOT = typer.main.get_command(albertzh.cli.app)
runner = CliRunner()

V, E, H, NH, I, P = 40, 8, 16, 2, 24, 32  # noqa: E741  (tiny sizes)


def _vocab(path: Path, size: int = V) -> Path:
    chars = "我们你他是的了在有不这个人中大上为和国地到以说时要就出会可也你好吗很对年生"
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]
    tokens = tokens[:size]
    assert len(tokens) == size
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def _albert_config(path: Path, layout: str, **extra) -> Path:
    cfg = {
        "attention_probs_dropout_prob": 0.0,
        "directionality": "bidi",
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "hidden_size": H,
        "embedding_size": E,
        "initializer_range": 0.02,
        "intermediate_size": I,
        "max_position_embeddings": P,
        "num_attention_heads": NH,
        "num_hidden_layers": 3,
        "pooler_type": "first_token_transform",
        "type_vocab_size": 2,
        "vocab_size": V,
    }
    if layout == "google":
        cfg.update(num_hidden_groups=1, inner_group_num=1, net_structure_type=0, gap_size=0)
    cfg.update(extra)
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path


def _rand(rng: np.random.Generator, *shape: int, scale: float = 0.3) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _dense(t: dict, rng: np.random.Generator, name: str, n_in: int, n_out: int) -> None:
    t[f"{name}/kernel"] = _rand(rng, n_in, n_out)
    t[f"{name}/bias"] = _rand(rng, n_out, scale=0.1)


def _norm(t: dict, rng: np.random.Generator, name: str, n: int) -> None:
    t[f"{name}/gamma"] = 1.0 + _rand(rng, n, scale=0.1)
    t[f"{name}/beta"] = _rand(rng, n, scale=0.1)


def _slots(t: dict) -> None:
    """Optimizer slots and global_step, as a training checkpoint has them."""
    for name in list(t)[:5]:
        t[f"{name}/adam_m"] = np.zeros_like(t[name])
        t[f"{name}/lamb_v"] = np.zeros_like(t[name])
    t["global_step"] = np.array(1000, dtype=np.int64)


def google_tensors(
    seed: int = 0, groups: int = 1, inner: int = 1, layers: int = 3, head: str = "pretraining"
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t: dict[str, np.ndarray] = {
        "bert/embeddings/word_embeddings": _rand(rng, V, E),
        "bert/embeddings/token_type_embeddings": _rand(rng, 2, E),
        "bert/embeddings/position_embeddings": _rand(rng, P, E),
    }
    _norm(t, rng, "bert/embeddings/LayerNorm", E)
    _dense(t, rng, "bert/encoder/embedding_hidden_mapping_in", E, H)
    for g in sorted({int(i / layers * groups) for i in range(layers)}):
        for k in range(inner):
            p = f"bert/encoder/transformer/group_{g}/inner_group_{k}"
            for part in ("query", "key", "value"):
                _dense(t, rng, f"{p}/attention_1/self/{part}", H, H)
            _dense(t, rng, f"{p}/attention_1/output/dense", H, H)
            _norm(t, rng, f"{p}/LayerNorm", H)
            _dense(t, rng, f"{p}/ffn_1/intermediate/dense", H, I)
            _dense(t, rng, f"{p}/ffn_1/intermediate/output/dense", I, H)
            _norm(t, rng, f"{p}/LayerNorm_1", H)
    _dense(t, rng, "bert/pooler/dense", H, H)
    if head == "pretraining":
        _dense(t, rng, "cls/predictions/transform/dense", H, E)
        _norm(t, rng, "cls/predictions/transform/LayerNorm", E)
        t["cls/predictions/output_bias"] = _rand(rng, V, scale=0.1)
        t["cls/seq_relationship/output_weights"] = _rand(rng, 2, H)
        t["cls/seq_relationship/output_bias"] = _rand(rng, 2, scale=0.1)
    elif head == "classifier":
        t["output_weights"] = _rand(rng, 3, H)
        t["output_bias"] = _rand(rng, 3, scale=0.1)
    return t


def brightmart_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t: dict[str, np.ndarray] = {
        "bert/embeddings/word_embeddings": _rand(rng, V, E),
        "bert/embeddings/word_embeddings_2": _rand(rng, E, H),
        "bert/embeddings/token_type_embeddings": _rand(rng, 2, H),
        "bert/embeddings/position_embeddings": _rand(rng, P, H),
    }
    _norm(t, rng, "bert/embeddings/LayerNorm", H)
    p = "bert/encoder/layer_shared"
    for part in ("query", "key", "value"):
        _dense(t, rng, f"{p}/attention/self/{part}", H, H)
    _dense(t, rng, f"{p}/attention/output/dense", H, H)
    _norm(t, rng, f"{p}/attention/output/LayerNorm", H)
    _dense(t, rng, f"{p}/intermediate/dense", H, I)
    _dense(t, rng, f"{p}/output/dense", I, H)
    _norm(t, rng, f"{p}/output/LayerNorm", H)
    _dense(t, rng, "bert/pooler/dense", H, H)
    _dense(t, rng, "cls/predictions/transform/dense", H, H)  # H -> H in brightmart's head
    _norm(t, rng, "cls/predictions/transform/LayerNorm", H)
    t["cls/predictions/output_bias"] = _rand(rng, V, scale=0.1)
    t["cls/seq_relationship/output_weights"] = _rand(rng, 2, H)
    t["cls/seq_relationship/output_bias"] = _rand(rng, 2, scale=0.1)
    return t


# --------------------------------------------------------------------------- NumPy reference


def _gelu(x: np.ndarray) -> np.ndarray:  # TF albert's gelu: the tanh approximation
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _ln(t: dict, name: str, x: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12) * t[f"{name}/gamma"] + t[f"{name}/beta"]


def _lin(t: dict, name: str, x: np.ndarray) -> np.ndarray:
    return x @ t[f"{name}/kernel"] + t[f"{name}/bias"]


def _attention(t: dict, p: str, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    B, T, _ = x.shape
    hd = H // NH

    def heads(y: np.ndarray) -> np.ndarray:
        return y.reshape(B, T, NH, hd).transpose(0, 2, 1, 3)

    q, k, v = (heads(_lin(t, f"{p}/self/{n}", x)) for n in ("query", "key", "value"))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
    scores = scores + (1.0 - mask[:, None, None, :]) * -10000.0
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(B, T, H)
    return _lin(t, f"{p}/output/dense", ctx)


def reference_forward(
    t: dict,
    layout: str,
    ids,
    types,
    mask,
    *,
    layers: int = 3,
    groups: int = 1,
    inner: int = 1,
    ln_type: str = "postln",
) -> dict[str, np.ndarray]:
    """albert_zh's TF forward (inference), written out in NumPy from the raw variables."""
    ids, types, mask = np.asarray(ids), np.asarray(types), np.asarray(mask, dtype=np.float64)
    t = {k: v.astype(np.float64) for k, v in t.items() if v.dtype == np.float32}
    T = ids.shape[1]
    emb = "bert/embeddings"
    word = t[f"{emb}/word_embeddings"][ids]
    if layout == "brightmart":
        word = word @ t[f"{emb}/word_embeddings_2"]  # E -> H before the H-wide additions
    x = word + t[f"{emb}/token_type_embeddings"][types] + t[f"{emb}/position_embeddings"][:T]
    x = _ln(t, f"{emb}/LayerNorm", x)
    if layout == "google":
        h = _lin(t, "bert/encoder/embedding_hidden_mapping_in", x)
        for i in range(layers):
            g = int(i / layers * groups)
            for k in range(inner):
                p = f"bert/encoder/transformer/group_{g}/inner_group_{k}"
                a = _ln(t, f"{p}/LayerNorm", h + _attention(t, f"{p}/attention_1", h, mask))
                f = _lin(
                    t,
                    f"{p}/ffn_1/intermediate/output/dense",
                    _gelu(_lin(t, f"{p}/ffn_1/intermediate/dense", a)),
                )
                h = _ln(t, f"{p}/LayerNorm_1", a + f)
    else:
        h, p = x, "bert/encoder/layer_shared"
        for _ in range(layers):
            if ln_type == "postln":
                a = _ln(
                    t,
                    f"{p}/attention/output/LayerNorm",
                    h + _attention(t, f"{p}/attention", h, mask),
                )
                f = _lin(t, f"{p}/output/dense", _gelu(_lin(t, f"{p}/intermediate/dense", a)))
                h = _ln(t, f"{p}/output/LayerNorm", a + f)
            else:  # preln: normalise the input of each block; no final LayerNorm
                a = h + _attention(
                    t, f"{p}/attention", _ln(t, f"{p}/attention/output/LayerNorm", h), mask
                )
                y = _ln(t, f"{p}/output/LayerNorm", a)
                h = a + _lin(t, f"{p}/output/dense", _gelu(_lin(t, f"{p}/intermediate/dense", y)))
    pooled = np.tanh(_lin(t, "bert/pooler/dense", h[:, 0]))
    out = {"last_hidden_state": h, "pooler_output": pooled}
    if "cls/predictions/output_bias" in t:
        z = _ln(
            t,
            "cls/predictions/transform/LayerNorm",
            _gelu(_lin(t, "cls/predictions/transform/dense", h)),
        )
        if layout == "brightmart":
            z = z @ t[f"{emb}/word_embeddings_2"].T  # H -> E through the projection, tied
        out["mlm_logits"] = z @ t[f"{emb}/word_embeddings"].T + t["cls/predictions/output_bias"]
        out["sop_logits"] = (
            pooled @ t["cls/seq_relationship/output_weights"].T
            + t["cls/seq_relationship/output_bias"]
        )
    if "output_weights" in t:
        out["logits"] = pooled @ t["output_weights"].T + t["output_bias"]
    return out


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, V, (2, 11), generator=g)
    ids[:, 0] = 2
    types = torch.zeros(2, 11, dtype=torch.long)
    types[:, 6:] = 1
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[1, 8:] = 0
    return ids, types, mask


def _albertzh_outputs(model_dir: Path, cls_name: str) -> dict[str, np.ndarray]:
    import albertzh.model as m

    model = getattr(m, cls_name).from_pretrained(model_dir).eval()
    ids, types, mask = _batch()
    albert = model.albert if hasattr(model, "albert") else model
    with torch.no_grad():
        base = albert(input_ids=ids, attention_mask=mask, token_type_ids=types)
        out = {"last_hidden_state": base.last_hidden_state, "pooler_output": base.pooler_output}
        if cls_name != "AlbertModel":
            res = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
            out.update({k: v for k, v in vars(res).items() if isinstance(v, torch.Tensor)})
    return {k: v.numpy() for k, v in out.items()}


def _compare(got: dict, want: dict, mask: torch.Tensor) -> None:
    keep = mask.bool().numpy()
    assert set(want) <= set(got), (sorted(got), sorted(want))
    for k, w in want.items():
        g = got[k]
        assert g.shape == w.shape, k
        if g.ndim == 3:  # padded positions are not compared (TF's -10000 vs a true mask)
            g, w = g[keep], w[keep]
        np.testing.assert_allclose(g, w, atol=2e-5, rtol=1e-4, err_msg=k)


def _write_release(tmp: Path, tensors: dict, layout: str, **cfg) -> Path:
    """A directory shaped like an albert_zh release zip: ckpt + albert_config + vocab.txt."""
    d = tmp / f"albert_{layout}_zh"
    write_checkpoint(d / "albert_model.ckpt", tensors)
    _albert_config(d / f"albert_config_{layout}.json", layout, **cfg)
    _vocab(d / "vocab.txt")
    return d


# --------------------------------------------------------------------------- google layout


def test_google_layout_matches_numpy_reference(tmp_path: Path) -> None:
    tensors = google_tensors()
    _slots(tensors)
    rel = _write_release(tmp_path, tensors, "google")
    r = runner.invoke(
        ROOT,
        [
            "convert",
            "--from",
            "tf",
            str(rel / "albert_model.ckpt"),
            "--albert-config",
            str(rel / "albert_config_google.json"),
            "--vocab",
            str(rel / "vocab.txt"),
            "-o",
            str(tmp_path / "m"),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["layout"] == "google" and summary["architecture"] == "AlbertForPreTraining"
    assert summary["skipped_optimizer_slots"] == 11 and summary["verify_max_abs_diff"] == 0.0
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["hidden_act"] == "gelu_new" and cfg["embedding_size"] == E
    assert (tmp_path / "m" / "vocab.txt").read_text() == (rel / "vocab.txt").read_text()
    ids, types, mask = _batch()
    want = reference_forward(tensors, "google", ids, types, mask)
    _compare(_albertzh_outputs(tmp_path / "m", "AlbertForPreTraining"), want, mask)


def test_google_groups_inner_groups_and_classifier_head(tmp_path: Path) -> None:
    # 4 layers over 2 groups of 2 inner layers, run_classifier.py's 3-way output layer.
    tensors = google_tensors(seed=5, groups=2, inner=2, layers=4, head="classifier")
    rel = _write_release(
        tmp_path, tensors, "google", num_hidden_layers=4, num_hidden_groups=2, inner_group_num=2
    )
    # SOURCE may be the release directory: config and vocab are found beside the checkpoint.
    r = runner.invoke(ROOT, ["convert", str(rel), "-o", str(tmp_path / "m"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["architecture"] == "AlbertForSequenceClassification"
    ids, types, mask = _batch()
    want = reference_forward(tensors, "google", ids, types, mask, layers=4, groups=2, inner=2)
    _compare(_albertzh_outputs(tmp_path / "m", "AlbertForSequenceClassification"), want, mask)


def test_google_more_groups_than_layers_are_renumbered(tmp_path: Path) -> None:
    # albert_config_tiny_google_fast.json says 12 groups for 4 layers: only 0,3,6,9 exist.
    tensors = google_tensors(seed=2, groups=12, layers=4, head="none")
    assert "bert/encoder/transformer/group_9/inner_group_0/LayerNorm/gamma" in tensors
    rel = _write_release(tmp_path, tensors, "google", num_hidden_layers=4, num_hidden_groups=12)
    r = runner.invoke(ROOT, ["convert", str(rel), "-o", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "m" / "config.json").read_text())["num_hidden_groups"] == 4
    ids, types, mask = _batch()
    want = reference_forward(tensors, "google", ids, types, mask, layers=4, groups=12)
    _compare(_albertzh_outputs(tmp_path / "m", "AlbertModel"), want, mask)


def test_unmapped_and_missing_variables_are_listed(tmp_path: Path) -> None:
    config, _ = cv.config_from_tf_json(_albert_config(tmp_path / "c.json", "google"))
    t = google_tensors()
    t["bert/encoder/some_new_thing/kernel"] = np.zeros((2, 2), np.float32)
    del t["bert/pooler/dense/bias"]
    with pytest.raises(InputError) as err:
        cv.tf_to_state(t, config, layout="google", source="ckpt")
    msg = str(err.value)
    assert msg.startswith("ckpt: google layout")
    assert "unmapped variable(s) bert/encoder/some_new_thing/kernel" in msg
    assert "missing variable(s) bert/pooler/dense/bias" in msg
    # a head present only in part is missing variables, not silently dropped
    t2 = google_tensors()
    del t2["cls/seq_relationship/output_bias"]
    with pytest.raises(
        InputError, match="missing variable\\(s\\) cls/seq_relationship/output_bias"
    ):
        cv.tf_to_state(t2, config, layout="google")


def test_cli_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    rel = _write_release(tmp_path, google_tensors(), "google")
    # vocab of the wrong size
    small = _vocab(tmp_path / "small_vocab.txt", size=30)
    r = runner.invoke(ROOT, ["convert", str(rel), "--vocab", str(small), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "small_vocab.txt: 30 tokens" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
    # a config with an unknown key names the file and key
    bad = _albert_config(tmp_path / "bad.json", "google", frobnicate=1)
    r = runner.invoke(
        ROOT, ["convert", str(rel), "--albert-config", str(bad), "-o", str(tmp_path / "o")]
    )
    assert r.exit_code == 2 and "bad.json: unknown key 'frobnicate'" in r.stderr
    # a non-empty output dir is refused without --overwrite, and kept intact
    out = tmp_path / "full"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    r = runner.invoke(ROOT, ["convert", str(rel), "-o", str(out)])
    assert r.exit_code == 2 and "--overwrite" in r.stderr and (out / "keep.txt").exists()
    r = runner.invoke(ROOT, ["convert", str(rel), "-o", str(out), "--overwrite"])
    assert r.exit_code == 0, r.output
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()
    # missing checkpoint
    r = runner.invoke(ROOT, ["convert", str(tmp_path / "nope.ckpt"), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "nope.ckpt.index: checkpoint index not found" in r.stderr


def _one_line(r, *needles: str) -> None:
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.output, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_config_is_a_run_config_and_albert_config_its_own_flag(tmp_path: Path) -> None:
    rel = _write_release(tmp_path, google_tensors(), "google")
    run = tmp_path / "run.yaml"
    run.write_text(
        f"source: {rel}\nalbert_config: {rel / 'albert_config_google.json'}\n"
        f"output: {tmp_path / 'm'}\ntarget_format: hf\n",
        encoding="utf-8",
    )
    r = runner.invoke(ROOT, ["convert", "--config", str(run), "--to", "albertzh", "--print-config"])
    assert r.exit_code == 0, r.output
    resolved = json.loads(r.stdout)
    assert resolved["albert_config"] == str(rel / "albert_config_google.json")
    assert resolved["target_format"] == "albertzh" and resolved["source"] == str(rel)  # flag wins
    r = runner.invoke(ROOT, ["convert", "--config", str(run), "--to", "albertzh", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["to"] == "albertzh" and (tmp_path / "m" / "config.json").is_file()
    # albert_zh's model config given as the run config: one line pointing at --albert-config
    r = runner.invoke(
        ROOT,
        ["convert", str(rel), "--config", str(rel / "albert_config_google.json"), "-o", "x"],
    )
    _one_line(r, "albert_config_google.json: unknown field(s)", "--albert-config")
    # a missing positional is named as such, not as a flag
    r = runner.invoke(ROOT, ["convert", "-o", str(tmp_path / "o")])
    _one_line(r, "SOURCE: missing")
    assert "--source" not in r.stderr


def test_wrong_from_says_which_one_to_use(tmp_path: Path) -> None:
    rel = _write_release(tmp_path, google_tensors(), "google")
    model_dir = tmp_path / "m"
    assert runner.invoke(ROOT, ["convert", str(rel), "-o", str(model_dir)]).exit_code == 0
    # an albertzh/HF model directory read as a TF checkpoint (--from tf is the default)
    r = runner.invoke(ROOT, ["convert", str(model_dir), "-o", str(tmp_path / "o")])
    _one_line(r, f"{model_dir}: an HF/albertzh model directory", "use --from hf")
    assert not (tmp_path / "o").exists()
    # ... also with pytorch_model.bin instead of model.safetensors
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "config.json").write_text("{}", encoding="utf-8")
    (bin_dir / "pytorch_model.bin").write_bytes(b"")
    r = runner.invoke(ROOT, ["convert", "--from", "tf", str(bin_dir), "-o", str(tmp_path / "o")])
    _one_line(r, "use --from hf")
    # and the other way round: a TF checkpoint (release dir or prefix) read as a model dir
    for source in (rel, rel / "albert_model.ckpt"):
        r = runner.invoke(ROOT, ["convert", "--from", "hf", str(source), "-o", str(tmp_path / "o")])
        _one_line(r, f"{source}: a TF checkpoint", "use --from tf")


def test_tf_round_trip_and_hf_round_trip(tmp_path: Path) -> None:
    tensors = google_tensors(seed=3)
    rel = _write_release(tmp_path, tensors, "google")
    a = tmp_path / "albertzh"
    assert runner.invoke(ROOT, ["convert", str(rel), "-o", str(a)]).exit_code == 0
    # albertzh -> TF: albert_zh's names and values come back exactly
    r = runner.invoke(
        ROOT, ["convert", "--from", "hf", str(a), "--to", "tf", "-o", str(tmp_path / "tf")]
    )
    assert r.exit_code == 0, r.output
    back = load_checkpoint(tmp_path / "tf" / "model.ckpt")
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)
    tf_cfg = json.loads((tmp_path / "tf" / "albert_config.json").read_text())
    assert tf_cfg["hidden_act"] == "gelu" and tf_cfg["num_hidden_layers"] == 3
    # ... and convert reads its own TF output back without --albert-config (the tokenizer's
    # tokenizer_config.json beside it is not taken for a second model config)
    assert (tmp_path / "tf" / "tokenizer_config.json").is_file()
    r = runner.invoke(ROOT, ["convert", str(tmp_path / "tf"), "-o", str(tmp_path / "a3")])
    assert r.exit_code == 0, r.output
    from safetensors.numpy import load_file

    s1, s3 = load_file(a / "model.safetensors"), load_file(tmp_path / "a3" / "model.safetensors")
    assert set(s1) == set(s3) and all(np.array_equal(s1[k], s3[k]) for k in s1)
    # albertzh -> HF -> albertzh: identical tensors
    r = runner.invoke(
        ROOT,
        ["convert", "--from", "hf", str(a), "--to", "hf", "-o", str(tmp_path / "hf"), "--json"],
    )
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "hf" / "albertzh.json").exists()
    r = runner.invoke(
        ROOT, ["convert", "--from", "hf", str(tmp_path / "hf"), "-o", str(tmp_path / "a2")]
    )
    assert r.exit_code == 0, r.output
    s1, s2 = load_file(a / "model.safetensors"), load_file(tmp_path / "a2" / "model.safetensors")
    assert set(s1) == set(s2) and all(np.array_equal(s1[k], s2[k]) for k in s1)


def test_a_typo_in_an_hf_config_is_refused_naming_the_closest_key(tmp_path: Path) -> None:
    """num_hiden_layers wrote a 12-layer config for a 2-layer checkpoint; now it is refused."""
    rel = _write_release(tmp_path, google_tensors(), "google")
    a = tmp_path / "albertzh"
    assert runner.invoke(ROOT, ["convert", str(rel), "-o", str(a)]).exit_code == 0
    cfg = json.loads((a / "config.json").read_text())
    cfg["num_hiden_layers"] = cfg.pop("num_hidden_layers")
    (a / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    r = runner.invoke(ROOT, ["convert", "--from", "hf", str(a), "-o", str(out)])
    _one_line(r, "config.json: unknown key 'num_hiden_layers'", "'num_hidden_layers'")
    assert not out.exists()


def test_transformers_loads_google_layout(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    tensors = google_tensors(seed=4)
    rel = _write_release(tmp_path, tensors, "google")
    r = runner.invoke(
        ROOT, ["convert", str(rel), "--to", "hf", "-o", str(tmp_path / "hf"), "--json"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["transformers_max_abs_diff"] < 1e-5
    model = transformers.AlbertForPreTraining.from_pretrained(str(tmp_path / "hf")).eval()
    ids, types, mask = _batch()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
    want = reference_forward(tensors, "google", ids, types, mask)
    got = {"mlm_logits": out.prediction_logits.numpy(), "sop_logits": out.sop_logits.numpy()}
    _compare(got, {k: want[k] for k in got}, mask)
    tok = transformers.BertTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert tok.convert_tokens_to_ids("我") == 5


# --------------------------------------------------------------------------- brightmart layout

needs_brightmart = pytest.mark.skipif(
    "embedding_layout" not in AlbertConfig.model_fields,
    reason="the model core has no embedding_layout option yet",
)


@needs_brightmart
@pytest.mark.parametrize("ln_type", ["postln", "preln"])
def test_brightmart_layout_matches_numpy_reference(tmp_path: Path, ln_type: str) -> None:
    tensors = brightmart_tensors(seed=7)
    _slots(tensors)
    rel = _write_release(tmp_path, tensors, "brightmart", ln_type=ln_type)
    r = runner.invoke(ROOT, ["convert", str(rel), "-o", str(tmp_path / "m"), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["layout"] == "brightmart" and s["ln_type"] == ln_type
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["embedding_layout"] == "brightmart" and cfg.get("ln_type", "postln") == ln_type
    ids, types, mask = _batch()
    want = reference_forward(tensors, "brightmart", ids, types, mask, ln_type=ln_type)
    _compare(_albertzh_outputs(tmp_path / "m", "AlbertForPreTraining"), want, mask)
    # back to TF: the same variables
    r = runner.invoke(
        ROOT,
        ["convert", "--from", "hf", str(tmp_path / "m"), "--to", "tf", "-o", str(tmp_path / "tf")],
    )
    assert r.exit_code == 0, r.output
    back = load_checkpoint(tmp_path / "tf")
    kept = {k: v for k, v in tensors.items() if not cv.is_skipped(k)}
    assert set(back) == set(kept) and all(np.array_equal(back[k], kept[k]) for k in kept)
    assert json.loads((tmp_path / "tf" / "albert_config.json").read_text())["ln_type"] == ln_type


@needs_brightmart
def test_brightmart_ln_type_flag_and_no_hf_target(tmp_path: Path) -> None:
    tensors = brightmart_tensors(seed=8)
    rel = _write_release(tmp_path, tensors, "brightmart")  # config without ln_type (xxlarge-like)
    r = runner.invoke(ROOT, ["convert", str(rel), "--ln-type", "preln", "-o", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    ids, types, mask = _batch()
    want = reference_forward(tensors, "brightmart", ids, types, mask, ln_type="preln")
    _compare(_albertzh_outputs(tmp_path / "m", "AlbertForPreTraining"), want, mask)
    r = runner.invoke(ROOT, ["convert", str(rel), "--to", "hf", "-o", str(tmp_path / "hf")])
    assert r.exit_code == 2 and "no transformers equivalent" in r.stderr
    assert not (tmp_path / "hf").exists()
    # a google checkpoint forced into the brightmart layout: the names that do not fit
    google = _write_release(tmp_path, google_tensors(), "google")
    r = runner.invoke(
        ROOT, ["convert", str(google), "--layout", "brightmart", "-o", str(tmp_path / "o")]
    )
    assert r.exit_code == 2 and "brightmart layout: unmapped variable(s) bert/encoder/" in r.stderr


def test_config_reader_rules(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ln_type preln exists only in the brightmart layout"):
        cv.config_from_tf_json(_albert_config(tmp_path / "a.json", "google", ln_type="preln"))
    with pytest.raises(ConfigError, match="net_structure_type=1 is not supported"):
        cv.config_from_tf_json(_albert_config(tmp_path / "b.json", "google", net_structure_type=1))
    cfg, groups = cv.config_from_tf_json(_albert_config(tmp_path / "c.json", "google"))
    assert cfg.hidden_act == "gelu_new" and groups == 1
    assert cv.config_to_tf_json(cfg)["hidden_act"] == "gelu"


def test_vocab_mismatch_error(tmp_path: Path) -> None:
    config, _ = cv.config_from_tf_json(_albert_config(tmp_path / "c.json", "google"))
    with pytest.raises(VocabMismatchError, match="v.txt: 30 tokens"):
        cv.load_vocab(_vocab(tmp_path / "v.txt", size=30), config)


@needs_brightmart
@pytest.mark.parametrize("ln_type", ["postln", "preln"])
def test_brightmart_model_option_masked_positions_and_param_count(ln_type: str) -> None:
    from albertzh.model import AlbertForPreTraining

    config = AlbertConfig(
        vocab_size=V,
        embedding_size=E,
        hidden_size=H,
        num_hidden_layers=3,
        num_attention_heads=NH,
        intermediate_size=I,
        max_position_embeddings=P,
        embedding_layout="brightmart",
        ln_type=ln_type,
    )
    torch.manual_seed(0)
    model = AlbertForPreTraining(config).eval()
    assert model.num_parameters() == config.num_parameters("pretraining")
    assert "albert.encoder.embedding_hidden_mapping_in.weight" not in model.state_dict()
    ids, types, mask = _batch()
    positions = torch.tensor([[1, 4, 7], [0, 2, 5]])
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, token_type_ids=types).mlm_logits
        part = model(
            input_ids=ids, attention_mask=mask, token_type_ids=types, masked_positions=positions
        ).mlm_logits
    want = torch.gather(full, 1, positions[:, :, None].expand(-1, -1, V))
    torch.testing.assert_close(part, want, atol=1e-5, rtol=1e-5)
    # the options survive config.json; the defaults are not written (HF-identical files)
    again = AlbertConfig.from_hf_dict(config.to_hf_dict())
    assert again.embedding_layout == "brightmart" and again.ln_type == ln_type
    assert "embedding_layout" not in AlbertConfig(vocab_size=V).to_hf_dict()
    with pytest.raises(ConfigError, match="preln is supported only with embedding_layout"):
        AlbertConfig(vocab_size=V, ln_type="preln")


def test_from_hf_masked_lm_directory(tmp_path: Path) -> None:
    """An HF AlbertForMaskedLM dir (the albert_chinese_* family): no pooler, no SOP head."""
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.AlbertConfig(
        vocab_size=V,
        embedding_size=E,
        hidden_size=H,
        num_hidden_layers=3,
        num_attention_heads=NH,
        intermediate_size=I,
        max_position_embeddings=P,
        hidden_act="gelu_new",
    )
    torch.manual_seed(3)
    hf = transformers.AlbertForMaskedLM(hf_cfg).eval()
    hf.save_pretrained(str(tmp_path / "hf"))
    _vocab(tmp_path / "hf" / "vocab.txt")
    r = runner.invoke(
        ROOT, ["convert", "--from", "hf", str(tmp_path / "hf"), "-o", str(tmp_path / "m"), "--json"]
    )
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["architecture"] == "AlbertForPreTraining"
    assert "sop_classifier" in s["initialized"]
    ids, types, mask = _batch()
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits.numpy()
    got = _albertzh_outputs(tmp_path / "m", "AlbertForPreTraining")["mlm_logits"]
    _compare({"mlm_logits": got}, {"mlm_logits": want}, mask)
