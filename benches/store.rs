//! Micro-benchmarks of the hot path below the network: framing a pipelined batch, and the L1
//! store's GET/SET of 100-byte values. The end-to-end comparison with redis-server is
//! `benches/resp.sh`; these isolate regressions in one layer.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use strata::cache::entry::Entry;
use strata::cache::store::Store;
use strata::server::frame::Framer;

fn store(c: &mut Criterion) {
    let s = Store::new(1);
    let keys: Vec<Vec<u8>> = (0..100_000)
        .map(|i| format!("key:{i:012}").into_bytes())
        .collect();
    let val = [b'x'; 100];
    for k in &keys {
        s.access(0, k, 0, |slot| slot.put(Entry::new_str(k, &val, None, 0)));
    }
    let mut g = c.benchmark_group("l1");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("get_100b", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            s.read(0, &keys[i], 1, |e| black_box(e.map(|e| e.key().len())))
        })
    });
    g.bench_function("set_100b", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            let k = &keys[i];
            s.access(0, k, 1, |slot| slot.put(Entry::new_str(k, &val, None, 0)))
        })
    });
    g.finish();
}

fn framing(c: &mut Criterion) {
    let mut batch = Vec::new();
    for i in 0..16 {
        let k = format!("key:{i:012}");
        batch.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n$100\r\n{}\r\n",
                k.len(),
                "x".repeat(100)
            )
            .as_bytes(),
        );
    }
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(16));
    g.bench_function("pipeline_16_sets", |b| {
        b.iter(|| {
            let mut f = Framer::new(512 << 20);
            let mut buf = BytesMut::from(&batch[..]);
            let mut n = 0;
            while let Ok(Some(cmd)) = f.next(&mut buf, true) {
                n += cmd.len();
            }
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, store, framing);
criterion_main!(benches);
