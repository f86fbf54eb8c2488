// SPDX-License-Identifier: AGPL-3.0-only
//! Hot pure code: the command parser and the RETR/TOP encoder.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pop3::protocol::{BodyEncoder, parse};
use std::hint::black_box;

fn message(size: usize, crlf: bool) -> Vec<u8> {
    let line: &[u8] = if crlf {
        b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    } else {
        b"The quick brown fox jumps over the lazy dog, again and again and again.\n"
    };
    let mut m = b"Subject: bench\r\n\r\n".to_vec();
    let mut n = 0;
    while m.len() + line.len() <= size {
        if n % 40 == 0 {
            m.extend_from_slice(b".a line that starts with a dot\r\n");
        }
        m.extend_from_slice(line);
        n += 1;
    }
    m
}

fn encoder(c: &mut Criterion) {
    let mut g = c.benchmark_group("encoder");
    for (name, crlf) in [("crlf", true), ("bare-lf", false)] {
        let msg = message(4 << 20, crlf);
        g.throughput(Throughput::Bytes(msg.len() as u64));
        g.bench_function(format!("retr-4MiB-{name}"), |b| {
            let mut out = Vec::with_capacity(msg.len() * 2);
            b.iter(|| {
                out.clear();
                let mut enc = BodyEncoder::retr();
                for chunk in msg.chunks(32 * 1024) {
                    enc.feed(black_box(chunk), &mut out);
                }
                enc.finish(&mut out);
                black_box(out.len())
            })
        });
    }
    let msg = message(4 << 20, true);
    g.throughput(Throughput::Bytes(msg.len() as u64));
    g.bench_function("top-all-lines-4MiB", |b| {
        let mut out = Vec::with_capacity(msg.len() * 2);
        b.iter(|| {
            out.clear();
            let mut enc = BodyEncoder::top(u32::MAX);
            for chunk in msg.chunks(32 * 1024) {
                enc.feed(black_box(chunk), &mut out);
            }
            enc.finish(&mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

fn parser(c: &mut Criterion) {
    let lines: &[&[u8]] = &[
        b"USER alice",
        b"PASS a secret password",
        b"STAT",
        b"LIST 1234",
        b"RETR 17",
        b"TOP 3 10",
        b"UIDL",
        b"DELE 99",
        b"QUIT",
    ];
    let mut g = c.benchmark_group("parser");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("typical-session-lines", |b| {
        b.iter(|| {
            for l in lines {
                black_box(parse(black_box(l)).is_ok());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, encoder, parser);
criterion_main!(benches);
