//! The proxy's response body: an error envelope, or the upstream's body relayed frame by frame as it
//! arrives, with every occurrence of the injected value replaced (across frame boundaries too), an idle
//! timeout and an overall deadline. It never yields an error: Lambda's streaming runtime would write
//! the error's text into the caller's body, so a failed upstream ends the body instead (and is logged).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

/// What an injected value becomes in a relayed answer.
pub(crate) const REDACTED: &[u8] = b"[REDACTED]";

/// A text that ends in this many bytes or more of the start of a value has them replaced too.
const MIN_REDACTED_TAIL: usize = 4;

/// Replaces every occurrence of any of its patterns in a stream of chunks, holding back only the tail
/// of a chunk that could be the start of one (so a stream's events pass on at once: they end in a line
/// break, which starts no value a header can carry).
#[derive(Debug, Default)]
pub(crate) struct Scrubber {
    patterns: Vec<Vec<u8>>,
    held: Vec<u8>,
    /// How many occurrences were replaced.
    pub(crate) replaced: u64,
}

impl Scrubber {
    pub(crate) fn new(patterns: Vec<Vec<u8>>) -> Self {
        let mut patterns: Vec<Vec<u8>> = patterns.into_iter().filter(|p| !p.is_empty()).collect();
        // Longest first, so that at one position the longest form is replaced whole.
        patterns.sort_by_key(|p| std::cmp::Reverse(p.len()));
        patterns.dedup();
        Self { patterns, held: Vec::new(), replaced: 0 }
    }

    /// The next chunk, scrubbed, less any tail that may continue into the next one.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(chunk);
        self.scan(buf, false)
    }

    /// Whatever was held back, at the end of the stream.
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        let held = std::mem::take(&mut self.held);
        self.scan(held, true)
    }

    fn scan(&mut self, buf: Vec<u8>, last: bool) -> Vec<u8> {
        if self.patterns.is_empty() {
            return buf;
        }
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        'outer: while i < buf.len() {
            let rest = &buf[i..];
            for p in &self.patterns {
                if rest.starts_with(p) {
                    out.extend_from_slice(REDACTED);
                    self.replaced += 1;
                    i += p.len();
                    continue 'outer;
                }
            }
            if self.patterns.iter().any(|p| p.len() > rest.len() && p.starts_with(rest)) {
                if !last {
                    self.held = rest.to_vec();
                    break;
                }
                // A text (or a stream cut short) that ends in the start of the value: that start is a
                // piece of the key, and goes no further unless it is too short to tell anything.
                if rest.len() >= MIN_REDACTED_TAIL {
                    out.extend_from_slice(REDACTED);
                    self.replaced += 1;
                    break;
                }
            }
            out.push(buf[i]);
            i += 1;
        }
        out
    }

    /// Scrubs one complete piece of text (a header value, a log line).
    pub(crate) fn scrub_all(&self, text: &[u8]) -> Vec<u8> {
        let mut once = Self { patterns: self.patterns.clone(), held: Vec::new(), replaced: 0 };
        once.scan(text.to_vec(), true)
    }
}

/// How a relayed call ended, logged once when its body ends (or is dropped).
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) request_id: String,
    pub(crate) host: String,
    pub(crate) status: u16,
    pub(crate) started: Instant,
    pub(crate) bytes: u64,
    pub(crate) logged: bool,
}

impl Outcome {
    fn log(&mut self, ended: &'static str, redacted: u64) {
        if self.logged {
            return;
        }
        self.logged = true;
        let duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(
            request_id = %self.request_id,
            upstream = %self.host,
            status = self.status,
            bytes = self.bytes,
            duration_ms,
            redacted,
            ended,
            "proxied call ended"
        );
    }
}

/// The upstream's body, relayed.
#[derive(Debug)]
pub(crate) struct Relay {
    pub(crate) inner: Incoming,
    pub(crate) scrub: Scrubber,
    pub(crate) idle_for: Duration,
    pub(crate) idle: Pin<Box<Sleep>>,
    pub(crate) deadline: Pin<Box<Sleep>>,
    pub(crate) outcome: Outcome,
    pub(crate) done: bool,
}

impl Relay {
    fn end(&mut self, ended: &'static str) -> Option<Bytes> {
        self.done = true;
        let tail = self.scrub.finish();
        self.outcome.bytes += tail.len() as u64;
        self.outcome.log(ended, self.scrub.replaced);
        (!tail.is_empty()).then(|| Bytes::from(tail))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.outcome.log("caller gone", self.scrub.replaced);
    }
}

/// A response body of the proxy: an error envelope, or the upstream's body relayed.
#[derive(Debug)]
pub struct ProxyBody(Kind);

#[derive(Debug)]
enum Kind {
    /// A whole body (an error envelope), sent once.
    Full(Option<Bytes>),
    /// The upstream's, as it arrives.
    Relay(Box<Relay>),
}

impl ProxyBody {
    /// A whole body, sent at once.
    pub(crate) fn full(text: impl Into<Bytes>) -> Self {
        Self(Kind::Full(Some(text.into())))
    }

    /// The upstream's body, relayed.
    pub(crate) fn relay(relay: Relay) -> Self {
        Self(Kind::Relay(Box::new(relay)))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let relay = match &mut self.0 {
            Kind::Full(data) => return Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Relay(relay) => relay,
        };
        loop {
            if relay.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut relay.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let deadline = tokio::time::Instant::now() + relay.idle_for;
                    relay.idle.as_mut().reset(deadline);
                    // Trailers are not relayed (Lambda's streaming responses have none).
                    let Ok(data) = frame.into_data() else { continue };
                    let out = relay.scrub.push(&data);
                    if out.is_empty() {
                        continue;
                    }
                    relay.outcome.bytes += out.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                }
                Poll::Ready(None) => return Poll::Ready(relay.end("complete").map(|d| Ok(Frame::data(d)))),
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(request_id = %relay.outcome.request_id, error = %e, "the upstream's body failed");
                    return Poll::Ready(relay.end("upstream error").map(|d| Ok(Frame::data(d))));
                }
                Poll::Pending => {}
            }
            if relay.deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(relay.end("max duration").map(|d| Ok(Frame::data(d))));
            }
            if relay.idle.as_mut().poll(cx).is_ready() {
                return Poll::Ready(relay.end("idle timeout").map(|d| Ok(Frame::data(d))));
            }
            return Poll::Pending;
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full(data) => data.is_none(),
            Kind::Relay(relay) => relay.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Relay(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scrub_in_chunks(patterns: &[&[u8]], text: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut s = Scrubber::new(patterns.iter().map(|p| p.to_vec()).collect());
        let mut out = Vec::new();
        let mut at = 0;
        for &cut in cuts {
            let cut = cut.clamp(at, text.len());
            out.extend(s.push(&text[at..cut]));
            at = cut;
        }
        out.extend(s.push(&text[at..]));
        out.extend(s.finish());
        out
    }

    #[test]
    fn values_are_replaced_across_chunk_boundaries() {
        let text = b"data: {\"echo\":\"Bearer sk-live-123\"}\n\ndata: sk-live-123sk-live-123\n\n";
        let want = b"data: {\"echo\":\"Bearer [REDACTED]\"}\n\ndata: [REDACTED][REDACTED]\n\n".to_vec();
        for cut in 0..text.len() {
            assert_eq!(scrub_in_chunks(&[b"sk-live-123"], text, &[cut]), want, "cut at {cut}");
        }
        // A held tail that never completes (the stream was cut short) is a piece of the key: replaced
        // too, unless it is too short to say anything.
        assert_eq!(scrub_in_chunks(&[b"sk-live-123"], b"ends with sk-li", &[12]), b"ends with [REDACTED]");
        assert_eq!(scrub_in_chunks(&[b"sk-live-123"], b"ends with sk-", &[12]), b"ends with sk-");
    }

    #[test]
    fn only_a_possible_start_of_a_value_is_held_back() {
        let mut s = Scrubber::new(vec![b"sk-live-123".to_vec()]);
        assert_eq!(s.push(b"data: one\n\n"), b"data: one\n\n");
        assert_eq!(s.push(b"data: two sk-"), b"data: two ");
        assert_eq!(s.push(b"live-123 three\n\n"), b"[REDACTED] three\n\n");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn any_chunking_gives_the_whole_text_scrubbed(
            text in proptest::collection::vec(prop_oneof![Just(b'k'), Just(b'e'), Just(b'y'), Just(b'%'), any::<u8>()], 0..200),
            cuts in proptest::collection::vec(0usize..200, 0..8),
        ) {
            let patterns: [&[u8]; 2] = [b"key", b"k%65y"];
            let mut sorted = cuts.clone();
            sorted.sort_unstable();
            let whole = scrub_in_chunks(&patterns, &text, &[]);
            prop_assert_eq!(scrub_in_chunks(&patterns, &text, &sorted), whole.clone());
            prop_assert!(!whole.windows(3).any(|w| w == b"key"));
        }
    }
}
