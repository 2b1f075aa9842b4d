//! What the packet path does to the datagrams of one direction and what it counts of them: the
//! vocabulary the call model, the commands' reports and the forwarding verdict share.

/// What the relay does to packets in one direction of one m-line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// RTP in, RTP out.
    PlainToPlain,
    /// SRTP forwarded untouched (prefer-direct); the sender's key only authenticates.
    PassThrough,
    /// SRTP in, RTP out.
    Decrypt,
    /// RTP in, SRTP out.
    Encrypt,
    /// SRTP in with one key, SRTP out with another.
    DecryptEncrypt,
    /// A non-RTP stream (T.38 over UDPTL) forwarded as opaque datagrams.
    Opaque,
}

impl Transform {
    /// Every transform, in counter order (see [`Self::index`]).
    pub const ALL: [Self; 6] = [
        Self::PlainToPlain,
        Self::PassThrough,
        Self::Decrypt,
        Self::Encrypt,
        Self::DecryptEncrypt,
        Self::Opaque,
    ];

    /// Name used in plans, logs, `query` and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PlainToPlain => "plain",
            Self::PassThrough => "pass-through",
            Self::Decrypt => "decrypt",
            Self::Encrypt => "encrypt",
            Self::DecryptEncrypt => "decrypt+encrypt",
            Self::Opaque => "opaque",
        }
    }

    /// Index into per-transform counters.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Packets, bytes and errors of one component (RTP or RTCP) as `query` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketStats {
    /// Packets received from the endpoint and forwarded.
    pub packets: u64,
    /// Their bytes, as received.
    pub bytes: u64,
    /// Packets from it that were dropped (authentication, replay, source, malformed).
    pub errors: u64,
}

impl PacketStats {
    /// Adds `other` to this.
    pub fn add(&mut self, other: &Self) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.errors += other.errors;
    }
}
