"""A batch of requests on its way through the handler's hooks: the samples
of the usable requests, collated, and the error of each other one, so that
one bad request never fails the rest of its batch."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from minimmf.common.sample import Sample, SampleList
from minimmf.datasets.builders.charades.video_clips import VideoDecodeError
from minimmf.serving.inputs import BadRequest, ParsedRequest

logger = logging.getLogger(__name__)


@dataclass
class PreparedBatch:
    size: int
    requests: dict[int, ParsedRequest] = field(default_factory=dict)  # usable requests by index
    samples: list[Sample] = field(default_factory=list)  # one per usable request, in index order
    errors: dict[int, tuple[int, str]] = field(default_factory=dict)  # index -> (HTTP status, message)
    describe: set[int] = field(default_factory=set)  # requests for the model's description

    @contextlib.contextmanager
    def catch(self, index: int) -> Iterator[None]:
        """Record what goes wrong with request ``index`` as its answer: a bad
        input as 400 with its message, anything else as 500 (logged)."""
        try:
            yield
        except (BadRequest, VideoDecodeError) as error:
            self.errors[index] = (400, str(error))
        except Exception:
            logger.exception("request %d of the batch failed", index)
            self.errors[index] = (500, "the request could not be processed; see the model log")

    def add(self, index: int, request: ParsedRequest, sample: Sample) -> None:
        self.requests[index] = request
        self.samples.append(sample)

    def collate(self, dataset_name: str) -> SampleList | None:
        """The usable requests' samples as one batch (None when there are none)."""
        if not self.samples:
            return None
        batch = SampleList(self.samples)
        batch.dataset_name, batch.dataset_type = dataset_name, "test"
        return batch

    def row_of(self, index: int) -> int:
        """The row of request ``index`` in the collated batch."""
        return list(self.requests).index(index)
