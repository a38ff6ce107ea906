"""Plots write real PNGs of the promised pixel size, for small and very large class counts."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from monkeysee.data.species import Species
from monkeysee.evaluate.interpret import TopLoss
from monkeysee.evaluate.metrics import reliability_table
from monkeysee.evaluate.plots import (
    confused_block,
    plot_confused_block,
    plot_confusion_matrix,
    plot_reliability,
    plot_top_losses,
    plot_training_curves,
    plot_unknown_scores,
)
from monkeysee.models.unknown import roc_curve

NAMES = ["mantled_howler", "patas_monkey", "bald_uakari", "japanese_macaque", "pygmy_marmoset",
         "white_headed_capuchin", "silvery_marmoset", "common_squirrel_monkey", "black_headed_night_monkey",
         "nilgiri_langur"]
SPECIES = [Species(f"n{i}", n) for i, n in enumerate(NAMES)]


@pytest.fixture
def drawn(monkeypatch) -> list[Figure]:
    """Every figure the plot functions save, in order: what each PNG shows, as matplotlib artists."""
    figures: list[Figure] = []
    real = Figure.savefig

    def spy(self: Figure, *args, **kwargs):
        figures.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return figures


def _png_size(path) -> tuple[int, int]:
    assert path.stat().st_size > 1000
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def _red_fraction(path) -> float:
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    return float(((rgb[..., 0] > 200) & (rgb[..., 1] < 50) & (rgb[..., 2] < 50)).mean())


def _cm(c: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = rng.integers(0, c, n)
    p = np.where(rng.random(n) < 0.8, t, rng.integers(0, c, n))
    return np.bincount(t * c + p, minlength=c * c).reshape(c, c)


def test_confusion_matrix_ten_classes(tmp_path, drawn):
    cm = _cm(10, 300)
    out = plot_confusion_matrix(cm, NAMES, tmp_path / "cm.png")
    assert out == tmp_path / "cm.png"
    assert _png_size(out) == (850, 750)
    ax = drawn[-1].axes[0]
    assert len(ax.texts) == 100  # a count in every cell
    assert [t.get_text() for t in ax.get_yticklabels()][:2] == ["mantled howler", "patas monkey"]


def test_confusion_matrix_cells_are_the_counts_under_the_species_names(tmp_path, drawn):
    cm = np.array([[5, 1, 0], [2, 7, 3], [0, 0, 9]])
    plot_confusion_matrix(cm, NAMES[:3], tmp_path / "cm.png")
    ax = drawn[-1].axes[0]
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cells == {(i, j): str(cm[i, j]) for i in range(3) for j in range(3)}  # row true, column predicted
    names = ["mantled howler", "patas monkey", "bald uakari"]
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true"
    assert ax.get_title() == "Confusion matrix"
    np.testing.assert_array_equal(ax.images[0].get_array(), cm)


def test_confusion_matrix_normalised_with_an_empty_row(tmp_path, drawn):
    cm = _cm(3, 50)
    cm[1] = 0
    out = plot_confusion_matrix(cm, NAMES[:3], tmp_path / "sub" / "cmn.png", normalize=True)
    assert _png_size(out) == (700, 600)
    texts = [t.get_text() for t in drawn[-1].axes[0].texts]
    assert texts[3:6] == ["0.00", "0.00", "0.00"]


def test_confusion_matrix_of_300_classes_draws_the_counts_without_labels(tmp_path, drawn):
    cm = _cm(300, 20000)
    names = [f"species_{i}" for i in range(300)]
    out = plot_confusion_matrix(cm, names, tmp_path / "cm300.png")
    assert _png_size(out) == (1000, 900)
    ax = drawn[-1].axes[0]
    assert len(ax.texts) == 0  # 90,000 cell labels would be unreadable and take minutes to draw
    assert not any(t.get_text().startswith("species") for t in ax.get_xticklabels())
    np.testing.assert_array_equal(ax.images[0].get_array(), cm)


def test_confusion_matrix_checks_names(tmp_path):
    with pytest.raises(ValueError, match="one name per class"):
        plot_confusion_matrix(np.eye(3), NAMES[:2], tmp_path / "cm.png")
    assert not (tmp_path / "cm.png").exists()


def test_training_curves_with_gaps_and_restarting_epochs_plot_against_the_overall_step(tmp_path, drawn):
    history = [
        {"epoch": 0, "phase": "frozen", "train_loss": 1.5, "train_acc": 0.5, "val_loss": 1.2, "val_acc": 0.6},
        {"epoch": 1, "phase": "frozen", "train_loss": 1.0, "train_acc": 0.7},
        {"epoch": 0, "phase": "unfrozen", "train_loss": 0.6, "train_acc": 0.85, "val_loss": None,
         "val_acc": 0.85},
        {"epoch": 1, "phase": "unfrozen", "train_loss": 0.4, "train_acc": 0.9, "val_loss": 0.5,
         "val_acc": 0.9},
    ]
    assert _png_size(plot_training_curves(history, tmp_path / "curves.png")) == (1100, 450)
    ax_loss, ax_acc = drawn[-1].axes
    lines = {(ax.get_title(), line.get_label()): line for ax in (ax_loss, ax_acc) for line in ax.lines}
    train, val = lines[("loss", "train")], lines[("loss", "validation")]
    assert list(train.get_xdata()) == [1, 2, 3, 4] and list(train.get_ydata()) == [1.5, 1.0, 0.6, 0.4]
    assert list(val.get_xdata()) == [1, 4] and list(val.get_ydata()) == [1.2, 0.5]  # gaps left out
    assert [line.get_xdata()[0] for line in ax_loss.lines if line.get_linestyle() == "--"] == [2.5]
    assert sorted(t.get_text() for t in ax_loss.texts) == ["frozen", "unfrozen"]
    plot_training_curves([], tmp_path / "empty.png")
    empty_loss, empty_acc = drawn[-1].axes
    assert [t.get_text() for t in empty_loss.texts] == [t.get_text() for t in empty_acc.texts] == ["no data"]


def test_training_curves_plot_exactly_the_history(tmp_path, drawn):
    history = [
        {"epoch": 1, "phase": "head", "train_loss": 1.5, "train_acc": 0.5, "val_loss": 1.2, "val_acc": 0.6},
        {"epoch": 2, "phase": "head", "train_loss": 1.0, "train_acc": 0.7, "val_loss": None, "val_acc": 0.8},
        {"epoch": 3, "phase": "finetune", "train_loss": 0.6, "train_acc": 0.85, "val_loss": 0.7,
         "val_acc": 0.75},
    ]
    plot_training_curves(history, tmp_path / "curves.png")
    ax_loss, ax_acc = drawn[-1].axes
    assert (ax_loss.get_title(), ax_acc.get_title()) == ("loss", "accuracy")
    assert ax_loss.get_xlabel() == ax_acc.get_xlabel() == "epoch"
    lines = {(ax.get_title(), line.get_label()): line for ax in (ax_loss, ax_acc) for line in ax.lines}

    def xy(ax_title, label):
        line = lines[(ax_title, label)]
        return list(line.get_xdata()), list(line.get_ydata())

    assert xy("loss", "train") == ([1, 2, 3], [1.5, 1.0, 0.6])
    assert xy("loss", "validation") == ([1, 3], [1.2, 0.7])  # the missing value is left out, not drawn as 0
    assert xy("accuracy", "train") == ([1, 2, 3], [0.5, 0.7, 0.85])
    assert xy("accuracy", "validation") == ([1, 2, 3], [0.6, 0.8, 0.75])
    assert xy("accuracy", "best val (2)") == ([2], [0.8])  # the best validation epoch is starred
    phases = sorted(t.get_text() for t in ax_loss.texts)
    assert phases == ["finetune", "head"]


def test_unknown_scores_picture_says_what_the_threshold_does(tmp_path, drawn):
    known, unknown = np.array([0.0, 1.0, 2.0, 3.0]), np.array([2.5, 4.0])
    plot_unknown_scores(known, unknown, 2.0, tmp_path / "unk.png", "energy")
    ax_hist, ax_roc = drawn[-1].axes
    assert ax_hist.get_title() == "Unknown-photo scores: energy"
    assert ax_hist.get_xlabel() == "energy score (higher = more likely unknown)"
    labels = ax_hist.get_legend_handles_labels()[1]
    assert "threshold 2: keeps 75% known, rejects 100% unknown" in labels
    assert "known species (n=4)" in labels and "unknown (n=2)" in labels
    counts = [sum(p.get_height() for p in c) for c in ax_hist.containers]
    assert counts == [4, 2]  # every photo is in its histogram
    (point,) = [line for line in ax_roc.lines if line.get_label() == "threshold"]
    assert (list(point.get_xdata()), list(point.get_ydata())) == ([0.25], [1.0])


def test_top_losses_grid_shows_overlays_instead_of_photos(tmp_path):
    items = [TopLoss(i, f"p{i}.jpg", target=i, pred=(i + 1) % 10, pred_prob=0.8, target_prob=0.1, loss=2.3)
             for i in range(4)]
    photos = [np.zeros((32, 48, 3), dtype=np.uint8) for _ in items]
    photos[0] = Image.fromarray(photos[0])  # PIL images and arrays both work
    red = np.zeros((32, 48, 3), dtype=np.uint8)
    red[..., 0] = 255
    plain = plot_top_losses(items, photos, SPECIES, tmp_path / "top.png")
    over = plot_top_losses(items, photos, SPECIES, tmp_path / "top_cam.png", overlays=[red] * 4)
    assert _png_size(plain) == _png_size(over) == (680, 780)  # 2 x 2 grid
    assert _red_fraction(plain) == 0.0
    assert _red_fraction(over) > 0.2  # the four red overlays fill much of the grid
    with pytest.raises(ValueError, match="one image"):
        plot_top_losses(items, photos[:3], SPECIES, tmp_path / "bad.png")


def test_unknown_scores_roc_is_the_roc_curve_with_its_area(tmp_path, drawn):
    known, unknown = np.array([0.1, 0.4, 0.4]), np.array([0.4, 0.8])
    out = plot_unknown_scores(known, unknown, 0.4, tmp_path / "unk.png", "energy")
    assert _png_size(out) == (1100, 450)
    _, ax_roc = drawn[-1].axes
    (curve,) = [line for line in ax_roc.lines if line.get_label().startswith("AUROC")]
    assert curve.get_label() == "AUROC 0.833"  # 5/6: one tie between the sets counts one half
    fpr, tpr = roc_curve(known, unknown)
    assert list(curve.get_xdata()) == list(fpr) and list(curve.get_ydata()) == list(tpr)


def test_reliability_diagram_bars_are_the_per_bin_accuracies(tmp_path, drawn):
    conf = [0.95, 0.95, 0.55, 0.55, 0.75]
    probs = np.array([[c, 1 - c] for c in conf])
    table = reliability_table(probs, np.array([0, 1, 0, 0, 1]))  # right, wrong, right, right, wrong
    out = plot_reliability(table, tmp_path / "rel.png", ece=0.51)
    assert _png_size(out) == (600, 700)
    ax, ax_count = drawn[-1].axes
    bars = ax.containers[0]
    assert [round(b.get_x() * 15) for b in bars] == [8, 11, 14]  # only filled bins get a bar
    assert [b.get_height() for b in bars] == pytest.approx([1.0, 0.0, 0.5])
    assert [b.get_width() for b in bars] == pytest.approx([1 / 15] * 3)
    assert ax.get_title() == "Reliability diagram (ECE 51.0%)"
    assert ax.get_ylabel() == "accuracy" and ax.get_xlim() == (0, 1) and ax.get_ylim() == (0, 1)
    assert ax_count.get_xlabel() == "confidence (top-1 probability)" and ax_count.get_ylabel() == "photos"
    assert [b.get_height() for b in ax_count.containers[0]] == [0] * 8 + [2, 0, 0, 1, 0, 0, 2]
    diagonal = ax.lines[1]
    assert list(diagonal.get_xdata()) == [0, 1] and list(diagonal.get_ydata()) == [0, 1]


def test_the_confused_block_holds_the_most_confused_species_side_by_side(tmp_path, drawn):
    cm = np.diag(np.full(100, 10))
    cm[3, 70], cm[70, 3] = 4, 2  # 3 <-> 70 the worst pair
    cm[40, 41] = 3
    cm[70, 12] = 1
    block = confused_block(cm, size=5)
    assert set(block) == {3, 70, 40, 41, 12}
    assert abs(block.index(3) - block.index(70)) == 1 and abs(block.index(40) - block.index(41)) == 1
    names = [f"species {i}" for i in range(100)]
    plot_confused_block(cm, names, tmp_path / "block.png", size=5)
    fig = drawn[-1]
    assert fig.axes[0].get_title() == "Most-confused species (5 of 100; rows true, columns predicted)"
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks == [names[i] for i in block]
    cells = {(int(t.get_position()[1]), int(t.get_position()[0])): t.get_text() for t in fig.axes[0].texts}
    i, j = block.index(3), block.index(70)
    assert cells[(i, j)] == "4" and cells[(j, i)] == "2"
