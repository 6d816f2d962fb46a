"""The read-only lists of the embedded server: example workflows, collections and models."""

from __future__ import annotations

from typing import Any

from ._etag import etag_of

__all__ = ["collections", "example_workflows", "models"]

_EPOCH = "2025-01-01T00:00:00+00:00"


def _example(id: str, name: str, description: str, tags: list[str]) -> dict[str, Any]:
    workflow: dict[str, Any] = {
        "id": id,
        "user_id": "examples",
        "name": name,
        "access": "public",
        "description": description,
        "tags": tags,
        "graph": {"nodes": [], "edges": []},
        "created_at": _EPOCH,
        "updated_at": _EPOCH,
    }
    workflow["etag"] = etag_of(workflow)
    return workflow


def example_workflows() -> list[dict[str, Any]]:
    """The templates behind ``GET /api/workflows/examples``; fresh copies each call."""
    return [
        _example("example-image-caption", "Image Caption", "Describe an image.", ["image"]),
        _example("example-summarize", "Summarize", "Summarize a long text.", ["text"]),
        _example("example-transcribe", "Transcribe", "Speech to text.", ["audio"]),
    ]


def collections() -> list[dict[str, Any]]:
    """The vector collections behind ``GET /api/collections/``."""
    return [
        {"name": "documents", "count": 12, "metadata": {"embedding_model": "all-minilm"}},
        {"name": "notes", "count": 3, "metadata": {"embedding_model": "all-minilm"}},
    ]


def models() -> list[dict[str, Any]]:
    """The models behind ``GET /api/models/all``."""
    return [
        {"id": "gpt-oss:20b", "name": "GPT-OSS 20B", "type": "language_model",
         "provider": "ollama"},
        {"id": "llama3.2:3b", "name": "Llama 3.2 3B", "type": "language_model",
         "provider": "ollama"},
        {"id": "openai/whisper-small", "name": "Whisper Small",
         "type": "hf.automatic_speech_recognition", "provider": "huggingface"},
    ]
