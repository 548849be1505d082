"""The ViStoryBench bridge: its dataset in as a round (dataset, importing), the round's images out in the
official evaluator's layout (export), and the evaluator's summary back in beside the round (results)."""
