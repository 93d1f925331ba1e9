"""The demo page under a short load (loopback only, bounded in time): several users at once with
bad uploads mixed in, no failed request, memory bounded, nothing left in the temporary folder."""

import pytest

pytest.importorskip("gradio")

from benchmarks.demo_load import run_demo_load  # noqa: E402

pytestmark = pytest.mark.slow


def test_several_users_with_bad_uploads_all_get_answers(trained_run, synthetic_dir, tmp_path):
    output_dir, _ = trained_run
    photos = sorted((synthetic_dir / "train_images").glob("*.png"))[:4]
    result = run_demo_load(
        output_dir / "best", photos, users=3, seconds=8, work_dir=tmp_path, min_requests=7
    )  # 7: each user sends each of the 4 photographs and 3 bad uploads at least once
    assert result["failure"] == 0, (result["failures"], result["server_log_tail"])
    assert result["graded"] >= 3 * 4 and result["handled_error"] >= 3 * 3, result
    assert result["queue_full"] == 0  # 3 users never fill a queue of 16
    assert result["temporary_files_left"] == [], result
    assert result["server_exit_code"] == 0, result["server_log_tail"]
    assert result["latency_p95_s"] >= result["latency_p50_s"] > 0
    # Memory after the load stays within 25 % of the warmed-up server's.
    assert result["server_rss_after_mib"] < 1.25 * result["server_rss_before_mib"], result
