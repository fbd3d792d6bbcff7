"""Host side of the framed UART protocol: CRC, frame encoder, incremental frame decoder.

The same frame format runs in both directions (see ``docs/protocol.md``)::

    0x7E | escaped( OP | LEN_lo | LEN_hi | PAYLOAD[LEN] | CRC_lo | CRC_hi )

``0x7E`` (SYNC) starts every frame and never appears inside one: inside a frame ``0x7E`` and ``0x7D``
are sent as ``0x7D, byte ^ 0x20``. The CRC is CRC-16/CCITT-FALSE over OP, LEN and PAYLOAD (the
unescaped bytes). Because SYNC is unique, a receiver resynchronizes on the next SYNC after any
damage, without timeouts.

:class:`FrameDecoder` has exactly the semantics of the gateware receiver
(:class:`npuforge.hdl.framing.FrameReceiver`): on the same byte stream both report the same
sequence of frames and errors. This module is pure Python (no Amaranth), so host tools and the
virtual board can use it on their own.
"""

from dataclasses import dataclass
from enum import IntEnum
from typing import List, Union

__all__ = [
    "ESC",
    "ESC_XOR",
    "MAX_LENGTH",
    "REPLY",
    "SYNC",
    "ErrorCode",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "Op",
    "ProtocolError",
    "crc16",
    "encode_error",
    "encode_frame",
    "reply_op",
]

#: Starts every frame; never appears inside one.
SYNC = 0x7E
#: Escape prefix: the next byte is the original byte XOR :data:`ESC_XOR`.
ESC = 0x7D
#: Applied to an escaped byte (0x7E -> 0x7D 0x5E, 0x7D -> 0x7D 0x5D).
ESC_XOR = 0x20
#: Set in the OP of a device's reply to a command (``OP | REPLY``).
REPLY = 0x80
#: Largest LEN the 16-bit length field can carry.
MAX_LENGTH = 0xFFFF


class Op(IntEnum):
    """Opcodes. A device's reply to a command carries ``op | REPLY``; errors carry :attr:`ERROR`.

    The payload layout of each command is defined by the board shell (``docs/protocol.md``,
    section "Commands").
    """

    INFO = 0x01
    RESET = 0x02
    SET_SHAPE = 0x10
    WRITE_X = 0x11
    WRITE_W = 0x12
    WRITE_BIAS = 0x13
    WRITE_MULT = 0x14
    WRITE_SHIFT = 0x15
    RUN = 0x20
    DATA = 0x21
    DONE = 0x22
    SNN_WRITE_W = 0x30
    SNN_SPIKES = 0x31
    SNN_STEP = 0x32
    SNN_READ = 0x33
    ERROR = 0x7F


class ErrorCode(IntEnum):
    """Error codes carried in an :attr:`Op.ERROR` frame (payload ``[code, op]``).

    Codes 1, 2, 3, 6 and 7 come from the frame receiver, 4 and 5 from the command dispatcher.
    """

    #: The CRC of a complete frame does not match its contents.
    BAD_CRC = 1
    #: LEN is larger than the receiver's maximum payload; the rest of the frame is skipped.
    BAD_LENGTH = 2
    #: A SYNC arrived inside a frame, which is abandoned (the SYNC starts the next one).
    TRUNCATED = 3
    #: The dispatcher does not know the opcode.
    UNKNOWN_OP = 4
    #: The dispatcher rejected the payload (wrong size or value).
    BAD_ARGUMENT = 5
    #: A frame arrived while the previous one still waited for the dispatcher; it is dropped.
    OVERRUN = 6
    #: Same code as :attr:`OVERRUN`: the device was busy.
    BUSY = 6
    #: ``0x7D`` followed by ``0x7E`` or by a byte other than ``0x5E``/``0x5D``.
    BAD_ESCAPE = 7


def _name(enum, value):
    try:
        return enum(value).name
    except ValueError:
        return "unknown"


class ProtocolError(Exception):
    """A frame was damaged, or the device reported an error, or a reply was not the expected one.

    Parameters
    ----------
    message : str
        What went wrong, for people.
    code : int or None
        The :class:`ErrorCode`, when there is one.
    op : int or None
        The opcode concerned, when known (0 if the receiver had not seen it).
    """

    def __init__(self, message, code=None, op=None):
        super().__init__(message)
        self.code = code
        self.op = op


@dataclass(frozen=True)
class Frame:
    """One complete frame with a good CRC.

    Members
    -------
    op : int
        Opcode, 0..255.
    payload : bytes
        The unescaped payload.
    """

    op: int
    payload: bytes = b""

    @property
    def is_error(self):
        """``True`` for an :attr:`Op.ERROR` frame sent by the device."""
        return self.op == Op.ERROR

    def encode(self):
        """The frame on the wire; see :func:`encode_frame`."""
        return encode_frame(self.op, self.payload)

    def error(self):
        """The :class:`ProtocolError` that an :attr:`Op.ERROR` frame reports.

        Returns
        -------
        ProtocolError

        Raises
        ------
        ValueError
            If this is not an error frame.
        """
        if not self.is_error:
            raise ValueError(f"frame with op 0x{self.op:02X} is not an ERROR frame (op 0x7F)")
        if len(self.payload) != 2:
            return ProtocolError(f"device sent an ERROR frame with a {len(self.payload)}-byte payload "
                                 f"{self.payload.hex()!r}; expected 2 bytes [code, op]")
        code, op = self.payload
        return ProtocolError(f"device reported error {code} ({_name(ErrorCode, code)}) for "
                             f"op 0x{op:02X} ({_name(Op, op)})", code=code, op=op)

    def reply_payload(self, op):
        """Check that this frame is the device's reply to command ``op`` and return its payload.

        Parameters
        ----------
        op : int
            The command that was sent.

        Returns
        -------
        bytes

        Raises
        ------
        ProtocolError
            If the frame is an ERROR frame (the error it reports) or a reply to another command.
        """
        if self.is_error:
            raise self.error()
        if self.op != reply_op(op):
            raise ProtocolError(f"expected a reply to op 0x{op:02X} ({_name(Op, op)}) with op "
                                f"0x{reply_op(op):02X}, got a frame with op 0x{self.op:02X}", op=op)
        return self.payload


@dataclass(frozen=True)
class FrameError:
    """A damaged frame, as detected by a receiver.

    Members
    -------
    code : int
        The :class:`ErrorCode`.
    op : int
        The opcode of the damaged frame, or 0 if it had not been received yet.
    """

    code: int
    op: int = 0

    def exception(self):
        """The same error as a :class:`ProtocolError` (to raise)."""
        return ProtocolError(f"received a damaged frame: {_name(ErrorCode, self.code)} "
                             f"(code {self.code}, op 0x{self.op:02X})", code=self.code, op=self.op)


def _check_byte(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise ValueError(f"{name} must be an integer in 0..255, not {value!r}")


def reply_op(op):
    """The opcode of the device's reply to command ``op``: ``op | 0x80``."""
    _check_byte("op", op)
    return op | REPLY


def crc16(data):
    """CRC-16/CCITT-FALSE: polynomial 0x1021, initial 0xFFFF, no reflection, no final XOR.

    Parameters
    ----------
    data : bytes-like

    Returns
    -------
    int
        The CRC, 0..0xFFFF (``crc16(b"123456789") == 0x29B1``).
    """
    crc = 0xFFFF
    for byte in bytes(data):
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        crc &= 0xFFFF
    return crc


def encode_frame(op, payload=b""):
    """Build a frame: SYNC, then OP, LEN, PAYLOAD and CRC, escaped.

    Parameters
    ----------
    op : int
        Opcode, 0..255.
    payload : bytes-like
        At most 65535 bytes.

    Returns
    -------
    bytes
        The frame as sent on the wire.

    Raises
    ------
    ValueError
        If ``op`` is not a byte or the payload is too long.
    TypeError
        If ``payload`` is not bytes-like.
    """
    _check_byte("op", op)
    try:
        payload = bytes(payload)
    except TypeError:
        raise TypeError(f"payload must be bytes-like, not {payload!r}") from None
    if len(payload) > MAX_LENGTH:
        raise ValueError(f"payload length must be in 0..{MAX_LENGTH}, not {len(payload)}")
    body = bytes([op, len(payload) & 0xFF, len(payload) >> 8]) + payload
    crc = crc16(body)
    body += bytes([crc & 0xFF, crc >> 8])
    out = bytearray([SYNC])
    for byte in body:
        if byte in (SYNC, ESC):
            out += bytes([ESC, byte ^ ESC_XOR])
        else:
            out.append(byte)
    return bytes(out)


def encode_error(code, op=0):
    """An :attr:`Op.ERROR` frame reporting ``code`` for opcode ``op`` (as a device sends it)."""
    _check_byte("code", code)
    _check_byte("op", op)
    return encode_frame(Op.ERROR, bytes([code, op]))


# Receiver states; the gateware FrameReceiver has the same ones.
_HUNT, _OP, _LEN0, _LEN1, _PAYLOAD, _CRC0, _CRC1, _SKIP = range(8)


class FrameDecoder:
    """Incremental frame decoder with the semantics of the gateware receiver.

    Bytes outside a frame (before the first SYNC, after a complete frame, or after an error) are
    ignored until the next SYNC. Repeated SYNCs are allowed (empty frames are no error). Each input
    byte yields at most one event:

    - a :class:`Frame` when its second CRC byte arrives and the CRC matches;
    - ``FrameError(BAD_CRC, op)`` when it does not;
    - ``FrameError(BAD_LENGTH, op)`` as soon as LEN > ``max_payload``; the rest is skipped;
    - ``FrameError(TRUNCATED, op)`` when a SYNC arrives after at least one byte of a frame;
    - ``FrameError(BAD_ESCAPE, op)`` when 0x7D is followed by 0x7E (which still starts a new frame)
      or by a byte other than 0x5E/0x5D (the frame is abandoned).

    ``op`` is 0 if the error came before the OP byte. The decoder never reports OVERRUN: that
    error comes from a device whose dispatcher is slower than its link.

    Parameters
    ----------
    max_payload : int
        Largest accepted LEN, 0..65535.

    Raises
    ------
    ValueError
        If ``max_payload`` is out of range.
    """

    def __init__(self, max_payload=MAX_LENGTH):
        if isinstance(max_payload, bool) or not isinstance(max_payload, int) or \
                not 0 <= max_payload <= MAX_LENGTH:
            raise ValueError(f"max_payload must be an integer in 0..{MAX_LENGTH}, not {max_payload!r}")
        self.max_payload = max_payload
        self.reset()

    def reset(self):
        """Forget any partial frame and wait for the next SYNC."""
        self._state = _HUNT
        self._esc = False
        self._op = 0
        self._length = 0
        self._payload = bytearray()
        self._crc_lo = 0

    @property
    def in_frame(self):
        """``True`` while a frame has been started and not finished or abandoned."""
        return self._state not in (_HUNT, _SKIP)

    def feed(self, data) -> List[Union[Frame, FrameError]]:
        """Decode more bytes.

        Parameters
        ----------
        data : bytes-like
            The next bytes of the stream, any split.

        Returns
        -------
        list of Frame or FrameError
            Events completed by these bytes, in stream order.
        """
        events = []
        for byte in bytes(data):
            event = self._byte(byte)
            if event is not None:
                events.append(event)
        return events

    def _start(self):
        self._state = _OP
        self._esc = False
        self._op = 0
        self._payload = bytearray()

    def _byte(self, byte):
        if byte == SYNC:
            event = None
            if self._esc:
                event = FrameError(ErrorCode.BAD_ESCAPE, self._op)
            elif self._state not in (_HUNT, _SKIP, _OP):
                event = FrameError(ErrorCode.TRUNCATED, self._op)
            self._start()
            return event
        if self._state in (_HUNT, _SKIP):
            return None
        if self._esc:
            self._esc = False
            if byte not in (SYNC ^ ESC_XOR, ESC ^ ESC_XOR):
                self._state = _HUNT
                return FrameError(ErrorCode.BAD_ESCAPE, self._op)
            byte ^= ESC_XOR
        elif byte == ESC:
            self._esc = True
            return None
        return self._data(byte)

    def _data(self, byte):
        state = self._state
        if state == _OP:
            self._op = byte
            self._state = _LEN0
        elif state == _LEN0:
            self._length = byte
            self._state = _LEN1
        elif state == _LEN1:
            self._length |= byte << 8
            if self._length > self.max_payload:
                self._state = _SKIP
                return FrameError(ErrorCode.BAD_LENGTH, self._op)
            self._state = _PAYLOAD if self._length else _CRC0
        elif state == _PAYLOAD:
            self._payload.append(byte)
            if len(self._payload) == self._length:
                self._state = _CRC0
        elif state == _CRC0:
            self._crc_lo = byte
            self._state = _CRC1
        else:  # _CRC1
            self._state = _HUNT
            body = bytes([self._op, self._length & 0xFF, self._length >> 8]) + bytes(self._payload)
            if crc16(body) != (self._crc_lo | byte << 8):
                return FrameError(ErrorCode.BAD_CRC, self._op)
            return Frame(self._op, bytes(self._payload))
        return None
