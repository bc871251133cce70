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
