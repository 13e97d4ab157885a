//! Reading a server-sent event stream: bytes in, complete messages out, as the HTML standard's
//! event-stream format says — lines ending in LF, CRLF or CR; `id`, `event` and `data` fields
//! (one optional space after the colon); several `data` lines joined with LF; comments (`:`)
//! ignored; a blank line ends a message, and a message without data is not one.

/// One message of an event stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// The `id` field (the stream position to resume after), when the message had one.
    pub id: Option<String>,
    /// The `event` field, `message` when absent.
    pub event: String,
    pub data: String,
}

/// An incremental event-stream parser.
#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    /// The previous byte was a CR (a following LF belongs to the same line end).
    after_cr: bool,
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
}

impl Parser {
    /// Feeds bytes; returns the messages they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Message> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(m) = self.line_done(&line) {
                        out.push(m);
                    }
                }
                _ => self.line.push(b),
            }
        }
        out
    }

    fn line_done(&mut self, line: &[u8]) -> Option<Message> {
        if line.is_empty() {
            let event = self.event.take();
            let data = self.data.take()?;
            return Some(Message {
                id: self.id.clone(),
                event: event.unwrap_or_else(|| "message".to_owned()),
                data,
            });
        }
        if line[0] == b':' {
            return None;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*text, ""),
        };
        match field {
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_anywhere_parse_the_same() {
        let text = b": keep-alive\n\nid: 7\nevent: output\ndata: {\"a\":1}\n\r\nid:8\r\ndata: x\rdata: y\r\rdata\n\nevent: lonely\n\n";
        let whole = Parser::default().feed(text);
        assert_eq!(
            whole,
            [
                Message {
                    id: Some("7".into()),
                    event: "output".into(),
                    data: "{\"a\":1}".into()
                },
                Message {
                    id: Some("8".into()),
                    event: "message".into(),
                    data: "x\ny".into()
                },
                // The id carries over to later messages, as in a browser.
                Message {
                    id: Some("8".into()),
                    event: "message".into(),
                    data: String::new()
                },
            ]
        );
        for split in 1..text.len() {
            let mut p = Parser::default();
            let mut got = p.feed(&text[..split]);
            got.extend(p.feed(&text[split..]));
            assert_eq!(got, whole, "split at {split}");
        }
    }
}
