"""Stage-1 training data the paper's way (section 3.2–3.4): picture books and videos into character groups.

`books` and `video` are the two pipelines; each is a list of stages that narrow a set of items (pages,
frames, crops) and count what is left. The stages that need a model take it from a folder or a hub id
through transformers' Auto classes and can be switched off; the rest is exact and runs anywhere.

Shared parts: `config` (every knob), `images` (safe decoding), `cache` (a stage's work kept by content
hash, so reruns skip it), `report` (counts per stage, skipped files), `dataset` (write, then rename),
`parallel` (a process pool over books/videos with one progress bar), `dedup` (perceptual hashes) and
`captions`.
"""
