"""A local SMTP server (aiosmtpd) that keeps every e-mail it receives, used by the demo and the
tests. Point apprise at it with ``url()``: a ``mailto://`` URL without TLS or login, which is
only fit for a loopback port."""

from __future__ import annotations

import email
import threading
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from pathlib import Path

from infra.broker import free_port


@dataclass
class Mailbox:
    host: str = "127.0.0.1"
    port: int = 0
    folder: Path | None = None  # when set, each message is saved there as NNN.eml
    sender: str = "yuqing@localhost"
    recipient: str = "risk-desk@localhost"
    received: list[EmailMessage] = field(default_factory=list)
    saved: list[Path] = field(default_factory=list)  # with `folder`: the file of each message
    _controller: object = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def url(self) -> str:
        """An apprise URL that sends to this server."""
        return (
            f"mailto://{self.host}:{self.port}?from={self.sender}&to={self.recipient}&mode=insecure"
        )

    def start(self) -> Mailbox:
        from aiosmtpd.controller import Controller

        mailbox = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
                mailbox._record(envelope.content)
                return "250 OK"

        self.port = self.port or free_port(self.host)
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self._controller = Controller(Handler(), hostname=self.host, port=self.port)
        self._controller.start()
        return self

    def _record(self, content: bytes) -> None:
        message = email.message_from_bytes(content, policy=policy.default)
        with self._lock:
            self.received.append(message)
            if self.folder is not None:
                path = self.folder / f"{len(self.received):03d}.eml"
                path.write_bytes(content)
                self.saved.append(path)

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> Mailbox:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def plain_text(message: EmailMessage) -> str:
    """The plain-text part of a message (or its only part)."""
    part = message.get_body(("plain",)) or message
    return part.get_content()
