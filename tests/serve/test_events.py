"""The per-request event queue: text pieces and token counts merge only under pressure, never across a
sample's end, and the bound counts every event a merged one holds."""

from __future__ import annotations

import asyncio
import random

import httpx

from genforge.sampling.engine import JobDone, SampleDone, TextPiece, Tokens
from genforge.serve.events import MERGE_AFTER, EventQueue, Overflow

from .conftest import running_server


def _drain(queue: EventQueue) -> list:
    async def go():
        return [await queue.get() for _ in range(queue.qsize())]
    return asyncio.run(go())


def test_a_queue_that_keeps_up_gives_every_event_on_its_own():
    queue = EventQueue()
    events = [(0, Tokens(1)), (0, TextPiece(0, "a")), (0, Tokens(1)), (0, TextPiece(0, "b")), (0, SampleDone(0, "length"))]
    for key, event in events:
        queue.put(key, event)
    assert _drain(queue) == events and queue.unread == 0


def test_under_pressure_pieces_merge_per_job_and_sample_and_never_past_an_end():
    rng = random.Random(0)
    queue = EventQueue()
    sent: dict[tuple[int, int], str] = {}
    ends = []
    for step in range(3 * MERGE_AFTER):
        for key in (0, 1):
            queue.put(key, Tokens(2))
            for index in (0, 1):
                piece = rng.choice("abcdefgh")
                sent[key, index] = sent.get((key, index), "") + piece
                queue.put(key, TextPiece(index, piece))
        if step == MERGE_AFTER + 5:  # sample 1 of job 0 ends in the middle of the merging
            queue.put(0, SampleDone(1, "stop"))
            ends.append(sent[0, 1])
    assert queue.unread == 3 * MERGE_AFTER * 2 * 3 + 1
    assert queue.qsize() < 2 * MERGE_AFTER  # merged: far fewer entries than events
    got: dict[tuple[int, int], str] = {}
    tokens = 0
    for key, event in _drain(queue):
        if isinstance(event, TextPiece):
            got[key, event.index] = got.get((key, event.index), "") + event.text
        elif isinstance(event, Tokens):
            tokens += event.count
        elif isinstance(event, SampleDone):
            assert got[0, 1] == ends[0]  # everything before the end came before it, nothing after
    assert got == sent and tokens == 3 * MERGE_AFTER * 2 * 2
    assert queue.unread == 0


def test_the_bound_counts_merged_events_and_overflows_once():
    cancelled = []
    queue = EventQueue(limit=200, on_overflow=lambda: cancelled.append(1))
    for _ in range(300):
        queue.put(0, TextPiece(0, "x"))
    queue.put(0, JobDone(1, 300))
    assert cancelled == [1] and queue.overflowed
    events = [e for _, e in _drain(queue)]
    assert isinstance(events[-1], Overflow) and not any(isinstance(e, JobDone) for e in events)
    assert sum(len(e.text) for e in events if isinstance(e, TextPiece)) == 200


def test_a_stream_faster_than_its_encoding_is_never_cancelled(served_runs):
    """2,000 tokens streamed with the default --stream-buffer from a decoder that outruns the JSON chunks."""
    with running_server([str(served_runs["tiny-gpt"])]) as (url, _):
        body = {"model": "tiny-gpt", "prompt": "line", "max_tokens": 2000, "seed": 7, "stream": True}
        lines = []
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as r:
            lines = [line for line in r.iter_lines() if line.startswith("data:")]
        whole = httpx.post(url + "/v1/completions", json={**body, "stream": False}, timeout=120).json()
    assert lines[-1] == "data: [DONE]" and '"error"' not in "".join(lines)
    import json
    chunks = [json.loads(line[5:]) for line in lines[:-1]]
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text == whole["choices"][0]["text"] and chunks[-1]["usage"]["completion_tokens"] == 2000
