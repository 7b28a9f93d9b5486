//! The multiplexed stream framing of non-TTY attach, exec and logs (moby's `stdcopy`).
//!
//! Each frame is `[stream type][0][0][0][payload length u32 big-endian][payload]`. Type 3
//! (system error) is never emitted: bollard panics on it.

/// Which standard stream a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdStream {
    /// Standard input (only ever echoed back in TTY-less attach).
    Stdin = 0,
    /// Standard output.
    Stdout = 1,
    /// Standard error.
    Stderr = 2,
}

impl StdStream {
    /// The stream for a frame type byte, if valid.
    pub fn from_byte(b: u8) -> Option<StdStream> {
        match b {
            0 => Some(StdStream::Stdin),
            1 => Some(StdStream::Stdout),
            2 => Some(StdStream::Stderr),
            _ => None,
        }
    }
}

/// Length of a frame header.
pub const HEADER_LEN: usize = 8;

/// Encodes one frame.
pub fn encode(stream: StdStream, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&[stream as u8, 0, 0, 0]);
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload[..len as usize]);
    out
}

/// Incremental decoder: feed bytes, take complete frames.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

/// A frame whose header names an unknown stream type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFrame(pub u8);

impl std::fmt::Display for BadFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unrecognized stream type {} in multiplexed stream",
            self.0
        )
    }
}

impl std::error::Error for BadFrame {}

impl Decoder {
    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Returns the next complete frame, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<(StdStream, Vec<u8>)>, BadFrame> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let stream = StdStream::from_byte(self.buf[0]).ok_or(BadFrame(self.buf[0]))?;
        let len = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let payload = self.buf[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.buf.drain(..HEADER_LEN + len);
        Ok(Some((stream, payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_across_split_reads() {
        let mut wire = encode(StdStream::Stdout, b"hello\n");
        wire.extend(encode(StdStream::Stderr, b"oops"));
        assert_eq!(&wire[..8], &[1, 0, 0, 0, 0, 0, 0, 6]);
        let mut d = Decoder::default();
        d.feed(&wire[..5]);
        assert_eq!(d.next_frame().unwrap(), None);
        d.feed(&wire[5..]);
        assert_eq!(
            d.next_frame().unwrap(),
            Some((StdStream::Stdout, b"hello\n".to_vec()))
        );
        assert_eq!(
            d.next_frame().unwrap(),
            Some((StdStream::Stderr, b"oops".to_vec()))
        );
        assert_eq!(d.next_frame().unwrap(), None);
    }

    #[test]
    fn unknown_stream_type_is_an_error() {
        let mut d = Decoder::default();
        d.feed(&[3, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(BadFrame(3)));
    }
}
