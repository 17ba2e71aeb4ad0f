"""Small pieces for twisted.web's Agent, shared by the Twisted client and the HTTP callbacks."""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer


@implementer(IBodyProducer)
class BytesBody:
    """A request body that is already in memory: written at once, so nothing to pause."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def read_body(response: IResponse) -> Deferred[bytes]:
    """The whole body of `response`, read so that a kept-alive connection can serve the next request."""
    body = _Collect()
    response.deliverBody(body)
    return body.done


class _Collect(Protocol):
    """A response body as bytes: `readBody`, minus its warning about kept-alive transports.

    (readBody warns on every response of a pooled HTTP/1.1 connection, whose
    transport proxy has no abortConnection; loseConnection closes it just as well.)
    """

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self.done: Deferred[bytes] = Deferred(self._cancel)

    def dataReceived(self, data: bytes) -> None:
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(ResponseDone, PotentialDataLoss):  # PotentialDataLoss: a body ended by closing
            self.done.callback(b"".join(self._chunks))
        else:
            self.done.errback(reason)

    def _cancel(self, _: Deferred[bytes]) -> None:
        if self.transport is not None:
            self.transport.loseConnection()
