"""Blind studies: arms compared on the same scenarios and seeds, answered in the annotator; stats turns
answers into win rates, Bradley–Terry scores, a position-bias check and Likert summaries."""
