//! An incremental reader of `text/event-stream` bodies (the WHATWG server-sent events format),
//! for the response and listen streams of upstream MCP servers.
//!
//! Bytes arrive in arbitrary chunks: a line, a `\r\n` pair or a UTF-8 sequence may be split
//! between two chunks. The reader keeps the unfinished line and event, bounded in size, since
//! the upstream controls both.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field (`message` when absent).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The `id:` field, if the event set one.
    pub id: Option<String>,
}

/// The stream broke the format or a bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// One event (or one line) is larger than the limit.
    #[error("an event exceeds {0} bytes")]
    EventTooLarge(usize),
    /// An event's data is not UTF-8.
    #[error("an event is not UTF-8")]
    NotUtf8,
}

/// The incremental parser.
#[derive(Debug)]
pub struct SseReader {
    max_event_bytes: usize,
    line: Vec<u8>,
    /// The previous chunk ended with `\r`: a `\n` starting this one belongs to it.
    skip_lf: bool,
    event: String,
    data: Vec<u8>,
    has_data: bool,
    id: Option<String>,
    started: bool,
}

impl SseReader {
    /// A reader refusing events (and lines) over `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            max_event_bytes,
            line: Vec::new(),
            skip_lf: false,
            event: String::new(),
            data: Vec::new(),
            has_data: false,
            id: None,
            started: false,
        }
    }

    /// Feeds the next chunk and returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut events = Vec::new();
        let mut rest = chunk;
        if self.skip_lf {
            self.skip_lf = false;
            if let [b'\n', tail @ ..] = rest {
                rest = tail;
            }
        }
        while !rest.is_empty() {
            match rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
                Some(at) => {
                    self.push_line_bytes(&rest[..at])?;
                    let cr = rest[at] == b'\r';
                    rest = &rest[at + 1..];
                    if cr {
                        match rest {
                            [b'\n', tail @ ..] => rest = tail,
                            [] => self.skip_lf = true,
                            _ => {}
                        }
                    }
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.line_done(&line)? {
                        events.push(event);
                    }
                }
                None => {
                    self.push_line_bytes(rest)?;
                    rest = &[];
                }
            }
        }
        Ok(events)
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + self.data.len() + bytes.len() > self.max_event_bytes {
            return Err(SseError::EventTooLarge(self.max_event_bytes));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn line_done(&mut self, line: &[u8]) -> Result<Option<SseEvent>, SseError> {
        let mut line = line;
        if !self.started {
            self.started = true;
            // A byte-order mark may open the stream.
            if let [0xEF, 0xBB, 0xBF, tail @ ..] = line {
                line = tail;
            }
        }
        if line.is_empty() {
            return self.dispatch();
        }
        if line[0] == b':' {
            return Ok(None); // a comment, e.g. a keep-alive
        }
        let (name, value) = match line.iter().position(|b| *b == b':') {
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.event = String::from_utf8(value.to_vec()).map_err(|_| SseError::NotUtf8)?;
            }
            b"id" if !value.contains(&0) => {
                self.id = Some(String::from_utf8(value.to_vec()).map_err(|_| SseError::NotUtf8)?);
            }
            // `retry` and unknown fields are ignored, as the format says.
            _ => {}
        }
        Ok(None)
    }

    fn dispatch(&mut self) -> Result<Option<SseEvent>, SseError> {
        let event = std::mem::take(&mut self.event);
        let had_data = std::mem::take(&mut self.has_data);
        if !had_data || self.data.is_empty() {
            // Also an empty `data:`: the format dispatches no event for it.
            self.data.clear();
            return Ok(None);
        }
        let data =
            String::from_utf8(std::mem::take(&mut self.data)).map_err(|_| SseError::NotUtf8)?;
        Ok(Some(SseEvent {
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data,
            // The last event id persists across events, as the format says.
            id: self.id.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(reader: &mut SseReader, chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(reader.feed(chunk).unwrap());
        }
        events
    }

    fn event(data: &str) -> SseEvent {
        SseEvent {
            event: "message".to_owned(),
            data: data.to_owned(),
            id: None,
        }
    }

    #[test]
    fn events_split_anywhere_give_the_same_result() {
        let stream = b"\xEF\xBB\xBF: keep-alive\r\nevent: message\r\ndata: {\"a\":\r\ndata:1}\r\n\r\nid: 7\ndata: caf\xC3\xA9\n\n\rdata: x\r\rretry: 10\n\n";
        let whole = feed_all(&mut SseReader::new(1024), &[stream]);
        assert_eq!(
            whole,
            vec![
                event("{\"a\":\n1}"),
                SseEvent {
                    id: Some("7".to_owned()),
                    ..event("café")
                },
                SseEvent {
                    id: Some("7".to_owned()),
                    ..event("x")
                },
            ]
        );
        // Every split point, including inside `\r\n` and inside the UTF-8 `é`.
        for at in 0..stream.len() {
            let (a, b) = stream.split_at(at);
            assert_eq!(
                feed_all(&mut SseReader::new(1024), &[a, b]),
                whole,
                "split at {at}"
            );
        }
        // One byte at a time.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(feed_all(&mut SseReader::new(1024), &bytes), whole);
    }

    #[test]
    fn events_without_data_are_not_dispatched() {
        // A priming event (an id and empty data), an event with no data; the id persists.
        let events = feed_all(
            &mut SseReader::new(1024),
            &[b"id: 1\ndata:\n\nevent: ping\n\ndata\n\ndata: x\n\n"],
        );
        assert_eq!(
            events,
            vec![SseEvent {
                id: Some("1".to_owned()),
                ..event("x")
            }]
        );
    }

    #[test]
    fn oversized_events_are_refused() {
        let mut reader = SseReader::new(16);
        assert_eq!(
            reader
                .feed(b"data: 0123456789\ndata: 0123456789")
                .unwrap_err(),
            SseError::EventTooLarge(16)
        );
        // A line without an end is bounded too.
        let mut reader = SseReader::new(16);
        reader.feed(b"data: 01234").unwrap();
        assert!(reader.feed(b"56789abcdef").is_err());
        let mut reader = SseReader::new(16);
        assert_eq!(
            reader.feed(b"data: \xFF\n\n").unwrap_err(),
            SseError::NotUtf8
        );
    }
}
