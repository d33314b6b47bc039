"""Delivery channels (SMTP, webhook) and the retry loop around them.

Each channel turns its own exceptions into ``DeliveryError(transient=...)``: transient failures
(connection refused or lost, timeouts, 4xx replies, HTTP 408/429/5xx) are retried with
exponential backoff until ``give_up_after``; permanent ones (SMTP 5xx, other HTTP 4xx) are not.
Error texts are built from codes and server replies only: never from credentials.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass

import aiohttp
import aiosmtplib

from config.notifier import SmtpSettings
from streams.notifier.sending import backoff_delay

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """A failed delivery attempt; ``transient`` says whether trying again can help."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def smtp_failure(exc: Exception, timeout: float | None = None) -> DeliveryError:
    """Classify an aiosmtplib (or socket) exception.

    A silent server (a tarpit that never greets, a relay hung on DATA) surfaces as aiosmtplib's
    timeout after ``timeout`` s of silence; it gets its own text, naming the wait, so the one log
    line of the failed attempt tells a hung server apart from a lost connection.
    """
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [error.code for error in exc.recipients]
        text = "; ".join(f"{error.code} {error.message}" for error in exc.recipients)
        return DeliveryError(f"recipients refused: {text}"[:500],
                             transient=any(code < 500 for code in codes))
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        # A credentials problem for the operator to fix: keep the reminder until give_up_after.
        return DeliveryError(f"SMTP authentication failed ({exc.code})", transient=True)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return DeliveryError(f"SMTP {exc.code}: {exc.message}"[:500], transient=exc.code < 500)
    if isinstance(exc, aiosmtplib.SMTPTimeoutError):
        waited = f"within {timeout:g} s " if timeout is not None else ""
        return DeliveryError(f"SMTP server did not answer {waited}({type(exc).__name__})",
                             transient=True)
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return DeliveryError(f"SMTP connection lost: {type(exc).__name__}", transient=True)
    if isinstance(exc, aiosmtplib.SMTPConnectError | OSError | TimeoutError):
        return DeliveryError(f"SMTP server unreachable: {type(exc).__name__}", transient=True)
    return DeliveryError(f"SMTP error: {type(exc).__name__}", transient=False)


class SmtpMailer:
    """Up to ``smtp.connections`` reused SMTP connections, one message at a time on each.

    A connection is opened (with TLS and login) when a message finds none idle and fewer than
    ``connections`` open, and is reopened after it was lost. Several connections let deliveries
    of different addresses overlap their SMTP round trips.

    ``smtp.timeout`` bounds the TCP connect, the wait for the greeting and each command's reply
    (DATA's included): a silent server holds a connection slot that long at most, aiosmtplib
    then closes the connection, and the attempt fails as transient (retried with backoff).
    """

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(settings.connections)

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            username=s.username,
            password=s.password.get_secret_value() if s.password is not None else None,
            use_tls=s.tls,
            start_tls=s.starttls,
            validate_certs=s.validate_certs,
            timeout=s.timeout,
            local_hostname="cartwatch",
        )
        await client.connect()
        return client

    async def send(self, message: bytes, sender: str, recipients: Sequence[str]) -> None:
        """Send one message (``sending.build_email``); ``DeliveryError`` when it failed."""
        options = [] if sender.isascii() and all(r.isascii() for r in recipients) else ["SMTPUTF8"]
        async with self._slots:
            client = None
            while self._idle and client is None:
                client = self._idle.pop()
                if not client.is_connected:
                    client = None
            try:
                if client is None:
                    client = await self._connect()
                await _transaction(client, message, sender, recipients, options)
            except Exception as exc:
                failure = smtp_failure(exc, self.settings.timeout)
                if failure.transient and client is not None:
                    await _quit(client)  # the next attempt starts on a fresh connection
                    client = None
                raise failure from None
            except BaseException:  # cancelled mid-transaction: the connection is unusable
                if client is not None:
                    client.close()
                    client = None
                raise
            finally:
                if client is not None and client.is_connected:
                    self._idle.append(client)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            await _quit(client)


async def _transaction(client: aiosmtplib.SMTP, message: bytes, sender: str,
                       recipients: Sequence[str], options: list[str]) -> None:
    """MAIL, RCPT for each recipient, DATA: what ``SMTP.sendmail`` does, less its second regex
    pass over the message (it rewrote the line ends once to size the message, again to send it:
    a tenth of the sender's time). Refusals raise as there, after an RSET."""
    encoding = "utf-8" if options else "ascii"
    if options and not client.supports_extension("smtputf8"):
        raise aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported by this server")
    mail_options = list(options)
    if client.supports_extension("size"):
        mail_options.insert(0, f"size={_size_as_sent(message)}")
    try:
        await client.mail(sender, options=mail_options, encoding=encoding)
        refused: list[aiosmtplib.SMTPRecipientRefused] = []
        for recipient in recipients:
            try:
                await client.rcpt(recipient, encoding=encoding)
            except aiosmtplib.SMTPRecipientRefused as exc:
                refused.append(exc)
        if len(refused) == len(recipients):
            raise aiosmtplib.SMTPRecipientsRefused(refused)
        await client.data(message)
    except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
        with suppress(ConnectionError, aiosmtplib.SMTPResponseException):
            await client.rset()  # the error that matters is the one raised below
        raise


def _size_as_sent(message: bytes) -> int:
    """Octets of ``message`` in DATA: every lone LF or CR becomes CRLF, and it ends with CRLF."""
    crlf = message.count(b"\r\n")
    size = len(message) + (message.count(b"\n") - crlf) + (message.count(b"\r") - crlf)
    return size if message.endswith((b"\n", b"\r")) else size + 2


async def _quit(client: aiosmtplib.SMTP) -> None:
    if client.is_connected:
        try:
            await client.quit()
        except Exception:  # already broken: just drop it
            client.close()


class WebhookPoster:
    """POSTs JSON bodies over one reused aiohttp session."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                url, data=body, headers={"Content-Type": "application/json", **headers},
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                if response.status < 300:
                    return
                transient = response.status in (408, 429) or response.status >= 500
                raise DeliveryError(f"webhook answered HTTP {response.status}",
                                    transient=transient)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise DeliveryError(f"webhook unreachable: {type(exc).__name__}",
                                transient=True) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial: float
    maximum: float
    give_up_after: float


async def deliver_with_retries(
    attempt: Callable[[], Awaitable[None]],
    policy: RetryPolicy,
    on_failure: Callable[[int, DeliveryError, bool], Awaitable[None]],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[bool, int]:
    """Run ``attempt`` until it succeeds, fails permanently, or time is up.

    ``on_failure(attempt_number, error, retrying)`` logs each failed attempt. Returns
    ``(delivered, attempts)``.
    """
    started = clock()
    number = 0
    while True:
        number += 1
        try:
            await attempt()
            return True, number
        except DeliveryError as error:
            delay = backoff_delay(number, policy.initial, policy.maximum)
            retrying = error.transient and clock() + delay - started <= policy.give_up_after
            await on_failure(number, error, retrying)
            if not retrying:
                return False, number
            await sleep(delay)
