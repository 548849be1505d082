"""bench data: its synthetic books and videos go through both pipelines with the counts they were built for."""

from storyloop.bench.data import run_data_bench


def test_data_bench_measures_both_pipelines_on_inputs_it_built():
    result = run_data_bench(books=2, pages=3, videos=1, seconds=18, workers=1, log=lambda m: None)
    # each book's last page repeats its first: dedup takes one per book
    assert result["books_counts"] == {"books": 2, "pages": 6, "resolution": 6, "narrative": 6, "dedup": 4,
                                      "min_frames": 4, "groups": 2}
    counts = result["video_counts"]  # three scenes, each cut to twice: one group each
    assert counts["shots"] == 6 and counts["frames"] == 18 and counts["groups"] == 3
    assert result["books_pages_per_s"] > 0 and result["video_frames_per_s"] > 0
