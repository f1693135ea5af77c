//! Any bytes as an SMTP server's replies, line by line: the parser never panics,
//! a reply it returns has a code in 200..=599, and judging it by any command
//! never panics either.
#![no_main]
use digestif::deliver::transport::reply::{Line, ReplyParser, SendError, Stage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parser = ReplyParser::default();
    for line in data.split_inclusive(|b| *b == b'\n') {
        match parser.line(line) {
            Err(_) => parser = ReplyParser::default(),
            Ok(Line::More) => {}
            Ok(Line::Done(reply)) => {
                assert!((200..600).contains(&reply.code));
                let _ = reply.enhanced();
                for stage in [
                    Stage::Greeting,
                    Stage::Ehlo,
                    Stage::StartTls,
                    Stage::Auth,
                    Stage::Rset,
                    Stage::Mail,
                    Stage::Rcpt,
                    Stage::Data,
                    Stage::EndOfData,
                ] {
                    let e = SendError::from_reply(stage, &reply);
                    assert_eq!(e.code, Some(reply.code));
                }
            }
        }
    }
});
