"""Batch scoring: every user at one point in time from the offline store, with reasons."""
