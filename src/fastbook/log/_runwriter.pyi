"""Typed surface of the native run writer (_runwriter.pyx beside it), used by runwriter."""

from fastbook.log.runwriter import NewsRun, NewsRunInput

def write_news_run(job: NewsRunInput, run: NewsRun) -> None:
    """Fill `run` (fresh) with what runwriter.write_news_run_reference(job) returns."""
    ...
