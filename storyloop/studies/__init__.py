"""Blind studies: arms (a model spec, or a folder of another method's images) compared on the same scenarios
and seeds and answered in the annotator, with the queue, leases and revisions that judging uses; stats turns
answers into win rates, Bradley–Terry scores, a position-bias check and Likert summaries."""
