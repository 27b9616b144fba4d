"""A batch of requests on its way through the handler's hooks: the samples
of the usable requests (each request's clips, then its timeline's windows),
and the error of each other one, so that one bad request never fails the
rest of its batch."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from minimmf.common.sample import Sample
from minimmf.datasets.video_clips import VideoDecodeError
from minimmf.serving.inputs import BadRequest, ParsedRequest
from minimmf.serving.predictor import RequestSamples

logger = logging.getLogger(__name__)


@dataclass
class RequestRows:
    """Where one request's samples are in the batch's list."""

    request: ParsedRequest
    clips: range  # its video-level clips, pooled into the video's answer
    windows: range  # its timeline's windows (empty when the timeline is off)
    spans: list[tuple[float, float]]  # the seconds each window spans
    window_seconds: float | None  # the window length the timeline used (None: no timeline)


@dataclass
class PreparedBatch:
    size: int
    rows: dict[int, RequestRows] = field(default_factory=dict)  # usable requests by index
    samples: list[Sample] = field(default_factory=list)  # every usable request's, in index order
    errors: dict[int, tuple[int, str]] = field(default_factory=dict)  # index -> (HTTP status, message)
    describe: set[int] = field(default_factory=set)  # requests for the model's description

    @contextlib.contextmanager
    def catch(self, index: int) -> Iterator[None]:
        """Record what goes wrong with request ``index`` as its answer: a bad
        input as 400 (or the status its error names) with its message, anything
        else as 500 (logged)."""
        try:
            yield
        except (BadRequest, VideoDecodeError) as error:
            self.errors[index] = (getattr(error, "status", 400), str(error))
        except Exception:
            logger.exception("request %d of the batch failed", index)
            self.errors[index] = (500, "the request could not be processed; see the model log")

    def add(self, index: int, request: ParsedRequest, samples: RequestSamples) -> None:
        first = len(self.samples)
        clips = range(first, first + len(samples.clips))
        windows = range(clips.stop, clips.stop + len(samples.windows))
        self.rows[index] = RequestRows(request, clips, windows, samples.spans, samples.window_seconds)
        self.samples += samples.clips + samples.windows
