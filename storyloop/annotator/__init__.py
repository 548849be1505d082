"""The Streamlit annotator (issue #4)."""
