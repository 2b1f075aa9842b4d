//! Zero-copy views of RTP and RTCP headers (RFC 3550), with every length checked once here.

/// Length of the fixed RTP header.
pub const RTP_HEADER_LEN: usize = 12;
/// Length of the fixed RTCP header plus the sender SSRC: the part SRTCP leaves in the clear.
pub const RTCP_HEADER_LEN: usize = 8;

/// A synchronisation source identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ssrc(pub u32);

/// An RTP sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqNo(pub u16);

/// The fields of an RTP header the relay needs, and where the payload starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpHeader {
    /// Sequence number.
    pub seq: SeqNo,
    /// Synchronisation source.
    pub ssrc: Ssrc,
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Length of the header including CSRCs and the header extension: SRTP encrypts from here.
    pub header_len: usize,
}

impl RtpHeader {
    /// Parses the header of an RTP packet; `None` if it is not version 2 or runs past the end.
    pub fn parse(pkt: &[u8]) -> Option<Self> {
        let fixed = pkt.get(..RTP_HEADER_LEN)?;
        if fixed[0] >> 6 != 2 {
            return None;
        }
        let csrc_count = usize::from(fixed[0] & 0x0f);
        let mut header_len = RTP_HEADER_LEN + 4 * csrc_count;
        if fixed[0] & 0x10 != 0 {
            // RFC 3550 §5.3.1: 16-bit profile word, 16-bit length in 32-bit words, then the words.
            let ext = pkt.get(header_len..header_len + 4)?;
            header_len += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        }
        if header_len > pkt.len() {
            return None;
        }
        Some(Self {
            seq: SeqNo(u16::from_be_bytes([fixed[2], fixed[3]])),
            ssrc: Ssrc(u32::from_be_bytes([
                fixed[8], fixed[9], fixed[10], fixed[11],
            ])),
            payload_type: fixed[1] & 0x7f,
            header_len,
        })
    }
}

/// The fields of the first RTCP header in a compound packet that SRTCP needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtcpHeader {
    /// Packet type of the first packet (200 = SR, 201 = RR, ...).
    pub packet_type: u8,
    /// Sender SSRC: identifies the SRTCP crypto context.
    pub ssrc: Ssrc,
}

impl RtcpHeader {
    /// Parses the first RTCP header; `None` if shorter than 8 bytes or not version 2.
    pub fn parse(pkt: &[u8]) -> Option<Self> {
        let fixed = pkt.get(..RTCP_HEADER_LEN)?;
        if fixed[0] >> 6 != 2 {
            return None;
        }
        Some(Self {
            packet_type: fixed[1],
            ssrc: Ssrc(u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]])),
        })
    }
}

/// RFC 5761 §4: on a muxed port, a second byte of 192..=223 (RTCP types 64..95 with the marker)
/// means RTCP; RTP payload types are kept out of that range.
pub fn is_rtcp(pkt: &[u8]) -> bool {
    matches!(pkt.get(1), Some(192..=223))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_csrcs_and_extension() {
        let mut pkt = vec![0x92, 0x00, 0x12, 0x34, 0, 0, 0, 1, 0xca, 0xfe, 0xba, 0xbe];
        pkt.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]); // two CSRCs
        pkt.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, 0x10, 0xaa, 0, 0]); // one-word extension
        pkt.extend_from_slice(&[0xff; 4]);
        let hdr = RtpHeader::parse(&pkt).unwrap();
        assert_eq!(hdr.header_len, 12 + 8 + 8);
        assert_eq!(hdr.seq, SeqNo(0x1234));
        assert_eq!(hdr.ssrc, Ssrc(0xcafebabe));
    }

    #[test]
    fn rejects_truncated_headers_without_panicking() {
        let full = [
            0x92u8, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 0xbe, 0xde, 0xff, 0xff,
        ];
        for cut in 0..full.len() {
            assert!(RtpHeader::parse(&full[..cut]).is_none(), "cut at {cut}");
        }
        // The extension claims 0xffff words.
        assert!(RtpHeader::parse(&full).is_none());
        assert!(RtpHeader::parse(&[0x40; 12]).is_none(), "version 1");
        assert!(RtcpHeader::parse(&[0x80, 200, 0, 1, 0, 0, 0]).is_none());
    }
}
