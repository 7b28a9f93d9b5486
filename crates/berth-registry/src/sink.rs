//! Feeding bytes that arrive on the async side into a blocking writer (a content-store
//! ingest) on its own thread, so hashing and disk writes run in parallel with the network
//! and never block the runtime.

use std::io::{self, Write};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How many chunks may wait between the network and the writer thread.
const QUEUE: usize = 32;

/// A writer running on a blocking thread, fed through a bounded channel.
pub(crate) struct BlockingSink<W> {
    tx: mpsc::Sender<Bytes>,
    handle: JoinHandle<(W, io::Result<()>)>,
}

impl<W: Write + Send + 'static> BlockingSink<W> {
    /// Starts the writer thread.
    pub(crate) fn new(mut writer: W) -> BlockingSink<W> {
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
        let handle = tokio::task::spawn_blocking(move || {
            while let Some(chunk) = rx.blocking_recv() {
                if let Err(e) = writer.write_all(&chunk) {
                    return (writer, Err(e));
                }
            }
            let flushed = writer.flush();
            (writer, flushed)
        });
        BlockingSink { tx, handle }
    }

    /// Queues a chunk. `false` means the writer stopped (its error comes from `finish`).
    pub(crate) async fn write(&self, chunk: Bytes) -> bool {
        self.tx.send(chunk).await.is_ok()
    }

    /// Waits until everything queued is written and returns the writer with the outcome.
    pub(crate) async fn finish(self) -> (W, io::Result<()>) {
        drop(self.tx);
        match self.handle.await {
            Ok(out) => out,
            // The closure does not panic; a cancelled runtime is the only way here.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FailAfter(usize, Vec<u8>);
    impl Write for FailAfter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.1.len() + buf.len() > self.0 {
                return Err(io::Error::other("disk full"));
            }
            self.1.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn writes_in_order_and_reports_errors() {
        let sink = BlockingSink::new(Vec::new());
        for i in 0..100u8 {
            assert!(sink.write(Bytes::from(vec![i; 3])).await);
        }
        let (out, res) = sink.finish().await;
        res.unwrap();
        assert_eq!(out.len(), 300);
        assert_eq!(&out[297..], &[99, 99, 99]);

        let sink = BlockingSink::new(FailAfter(5, Vec::new()));
        let mut refused = false;
        for _ in 0..200 {
            if !sink.write(Bytes::from_static(b"abc")).await {
                refused = true;
                break;
            }
        }
        let (w, res) = sink.finish().await;
        assert!(refused || res.is_err());
        assert_eq!(res.unwrap_err().to_string(), "disk full");
        assert_eq!(w.1, b"abc");
    }
}
