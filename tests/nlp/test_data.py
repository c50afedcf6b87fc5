import sys
import types

import pandas as pd
import pytest

from nlp.data import DataError, frame_sha256, load_labeled, stratified_split


def _rows():
    return pd.DataFrame(
        {
            "text": ["Fed hikes rates &amp; stocks fall", "   ", "Oil jumps", "Gold flat"],
            "label": ["negative", "neutral", "positive", "neutral"],
        }
    )


def _assert_clean(frame):
    assert list(frame.columns) == ["text", "label"]
    assert len(frame) == 3  # the whitespace-only text is dropped
    assert all(isinstance(v, str) for v in frame["text"]) and all(
        isinstance(v, str) for v in frame["label"]
    )
    assert frame["label"].tolist() == ["negative", "positive", "neutral"]


def test_load_csv(tmp_path):
    path = tmp_path / "rows.csv"
    _rows().to_csv(path, index=False)
    _assert_clean(load_labeled(path))
    _assert_clean(load_labeled(str(path)))


def test_load_parquet(tmp_path):
    path = tmp_path / "rows.parquet"
    _rows().to_parquet(path)
    _assert_clean(load_labeled(path))


def test_load_directory_picks_split_file(tmp_path):
    _rows().to_csv(tmp_path / "train.csv", index=False)
    _rows().iloc[:1].to_parquet(tmp_path / "valid.parquet")
    _assert_clean(load_labeled(tmp_path))
    assert len(load_labeled(tmp_path, split="valid")) == 1
    with pytest.raises(DataError, match="test.csv nor test.parquet"):
        load_labeled(tmp_path, split="test")


def test_custom_column_names(tmp_path):
    path = tmp_path / "rows.csv"
    _rows().rename(columns={"text": "tweet", "label": "y"}).to_csv(path, index=False)
    frame = load_labeled(path, text_column="tweet", label_column="y")
    assert list(frame.columns) == ["text", "label"] and len(frame) == 3


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_labeled(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="no such file"):
        load_labeled("data/nope.csv")  # looks like owner/name but is a file name


def test_missing_columns(tmp_path):
    path = tmp_path / "rows.csv"
    _rows().rename(columns={"label": "sentiment"}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"missing column\(s\) \['label'\]"):
        load_labeled(path)


def test_empty_result(tmp_path):
    path = tmp_path / "rows.csv"
    pd.DataFrame({"text": ["", " "], "label": ["a", "b"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="no labeled rows"):
        load_labeled(path)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "rows.txt"
    path.write_text("text,label\na,b\n")
    with pytest.raises(DataError, match="unsupported file type"):
        load_labeled(path)


def test_hub_id_without_datasets_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DataError, match=r"pip install 'yuqing\[hub\]'"):
        load_labeled("zeroshot/twitter-financial-news-sentiment")


class _HubDataset:
    """Stand-in for a `datasets.Dataset`: the two attributes load_labeled reads."""

    def __init__(self, frame, features):
        self._frame, self.features = frame, features

    def to_pandas(self):
        return self._frame.copy()


def _fake_datasets(monkeypatch, frame, features):
    module = types.ModuleType("datasets")
    module.load_dataset = lambda dataset_id, split: _HubDataset(frame, features)
    monkeypatch.setitem(sys.modules, "datasets", module)


def test_hub_integer_labels_use_builtin_table(monkeypatch):
    frame = pd.DataFrame({"text": ["down", "up", "flat"], "label": [0, 1, 2]})
    _fake_datasets(monkeypatch, frame, features={"label": object()})
    loaded = load_labeled("zeroshot/twitter-financial-news-sentiment", split="validation")
    assert loaded["label"].tolist() == ["negative", "positive", "neutral"]
    topic = pd.DataFrame({"text": ["a", "b"], "label": [1, 19]})
    _fake_datasets(monkeypatch, topic, features={"label": object()})
    loaded = load_labeled("zeroshot/twitter-financial-news-topic")
    assert loaded["label"].tolist() == ["Fed | Central Banks", "Stock Movement"]


def test_hub_integer_labels_prefer_classlabel_names(monkeypatch):
    frame = pd.DataFrame({"text": ["x", "y"], "label": [1, 0]})
    _fake_datasets(
        monkeypatch, frame, features={"label": types.SimpleNamespace(names=["bad", "good"])}
    )
    assert load_labeled("someone/reviews")["label"].tolist() == ["good", "bad"]


def test_hub_integer_labels_without_names_fail(monkeypatch):
    frame = pd.DataFrame({"text": ["x"], "label": [3]})
    _fake_datasets(monkeypatch, frame, features={"label": object()})
    with pytest.raises(DataError, match="no label names"):
        load_labeled("someone/unknown")
    _fake_datasets(monkeypatch, frame, features={"label": object()})
    with pytest.raises(DataError, match=r"label ids \[3\] have no name"):
        load_labeled("zeroshot/twitter-financial-news-sentiment")


def _labeled(counts: dict[str, int]) -> pd.DataFrame:
    labels = [label for label, n in counts.items() for _ in range(n)]
    return pd.DataFrame({"text": [f"t{i}" for i in range(len(labels))], "label": labels})


def test_stratified_split_properties():
    frame = _labeled({"a": 100, "b": 30, "c": 2, "d": 1})
    train, dev = stratified_split(frame, dev_fraction=0.1, seed=13)
    assert len(train) + len(dev) == len(frame)
    assert set(train["text"]).isdisjoint(dev["text"])
    dev_counts = dev["label"].value_counts().to_dict()
    assert dev_counts == {"a": 10, "b": 3, "c": 1}  # d (one row) stays in train
    assert set(train["label"]) == {"a", "b", "c", "d"}
    again_train, again_dev = stratified_split(frame, dev_fraction=0.1, seed=13)
    pd.testing.assert_frame_equal(dev, again_dev)
    pd.testing.assert_frame_equal(train, again_train)
    _, other_dev = stratified_split(frame, dev_fraction=0.1, seed=14)
    assert set(other_dev["text"]) != set(dev["text"])


def test_stratified_split_rejects_bad_fraction():
    with pytest.raises(DataError, match="dev_fraction"):
        stratified_split(_labeled({"a": 10}), dev_fraction=1.0)


def test_frame_sha256_is_stable_and_content_sensitive():
    frame = _labeled({"a": 3, "b": 2})
    digest = frame_sha256(frame)
    assert len(digest) == 64 and digest == frame_sha256(frame.copy())
    changed = frame.copy()
    changed.loc[0, "label"] = "b"
    assert frame_sha256(changed) != digest
