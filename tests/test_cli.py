"""The README's main command: ``mrcnn-edu demo`` prints every stage, agrees with the lecture and draws it."""
import subprocess
import sys

from mrcnn_edu.cli import main


def test_demo_prints_the_lecture_numbers_and_draws_every_stage(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "1900 cells x 9 = 17100 anchors" in printed
    assert "[[0.85, 0.84], [0.97, 0.96]]" in printed
    assert "MISMATCH" not in printed and "all stages agree with the lecture" in printed
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["01_iou.png", "01_nms.png", "02_anchors.png", "03_rpn_labels.png",
                    "04_roi_pool_vs_align.png", "05_smooth_l1.png"]
    assert all((tmp_path / p).stat().st_size > 10_000 for p in pngs)  # real pictures, not empty files


def test_python_dash_m_and_a_bad_backend():
    result = subprocess.run([sys.executable, "-m", "mrcnn_edu", "--backend", "tpu", "demo"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice: 'tpu'" in result.stderr


def test_demo_figures_state_the_conventions_they_were_drawn_with(tmp_path, monkeypatch, capsys):
    """Each figure's titles (and colour bar labels) say how its stage was computed: what a student checks
    the printed numbers against."""
    from pathlib import Path

    import mrcnn_edu.visualize as visualize

    words, real_save = {}, visualize.save

    def spy(fig, path):
        words[Path(path).name] = " ".join([fig._suptitle.get_text() if fig._suptitle else ""]
                                          + [ax.get_title() for ax in fig.axes] + [ax.get_ylabel() for ax in fig.axes])
        return real_save(fig, path)

    monkeypatch.setattr(visualize, "save", spy)
    assert main(["demo", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert "width x2 - x1" in words["01_iou.png"]
    assert "IoU > 0.7" in words["01_nms.png"] and "score" in words["01_nms.png"]
    assert "cell corners (16 j, 16 i)" in words["02_anchors.png"]
    assert "IoU >= 0.7" in words["03_rpn_labels.png"] and "IoU < 0.3" in words["03_rpn_labels.png"]
    roi = words["04_roi_pool_vs_align.png"]
    assert "bins='slides'" in roi and "aligned=True" in roi and "sampling_ratio=2" in roi and "feature value" in roi
    assert "beta = 1" in words["05_smooth_l1.png"]
