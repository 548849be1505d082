"""Blind studies of arms against arms (issue #20): did the round help?"""
