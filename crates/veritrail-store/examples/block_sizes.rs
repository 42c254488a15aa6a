//! Compressed size and decompression time of one sealed segment's records cut into blocks of
//! several sizes, each with a dictionary trained on the segment as sealing does:
//! `cargo run --release -p veritrail-store --example block_sizes -- DATA_DIR/tenants/T/log/00000001.zseg`.

use std::time::Instant;

use veritrail_store::embedded::formats::SealedSegment;

fn main() {
    let path = std::env::args().nth(1).expect("a .zseg file");
    let seg = SealedSegment::open(
        path.as_ref(),
        std::path::Path::new(&path)
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .expect("NNNNNNNN.zseg"),
    )
    .expect("opens");
    let mut raw = Vec::new();
    for k in 0..seg.blocks.len() {
        raw.extend(seg.read_block(k).expect("block"));
    }
    let records: Vec<&[u8]> = {
        let mut out = Vec::new();
        let mut at = 0usize;
        while at + 17 <= raw.len() {
            let len = u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]) as usize;
            out.push(&raw[at..at + 17 + len]);
            at += 17 + len;
        }
        out
    };
    println!("{} records, {} bytes", records.len(), raw.len());
    let step = (records.len() / 2000).max(1);
    let samples: Vec<&[u8]> = records.iter().step_by(step).copied().collect();
    let dict = zstd::dict::from_samples(&samples, 32 * 1024).expect("dictionary");
    for block in [4096usize, 8192, 16384, 32768] {
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        let mut cur = Vec::new();
        for r in &records {
            if !cur.is_empty() && cur.len() + r.len() > block {
                blocks.push(std::mem::take(&mut cur));
            }
            cur.extend_from_slice(r);
        }
        blocks.push(cur);
        let mut c = zstd::bulk::Compressor::with_dictionary(3, &dict).expect("compressor");
        let packed: Vec<Vec<u8>> = blocks
            .iter()
            .map(|b| c.compress(b).expect("compress"))
            .collect();
        let total: usize = packed.iter().map(Vec::len).sum();
        let mut d = zstd::bulk::Decompressor::with_dictionary(&dict).expect("decompressor");
        let t = Instant::now();
        for (p, b) in packed.iter().zip(&blocks) {
            let out = d.decompress(p, b.len()).expect("decompress");
            assert_eq!(out.len(), b.len());
        }
        let per_block = t.elapsed().as_secs_f64() * 1e6 / packed.len() as f64;
        println!(
            "block {block:>6}: {:>7} blocks, {:>5.1} B per event (+ {} B dictionary), ratio {:.1}x, {:.1} µs to decompress a block",
            packed.len(),
            total as f64 / records.len() as f64,
            dict.len(),
            raw.len() as f64 / total as f64,
            per_block
        );
    }
}
