fn main() {
    let p = gram_bench::clip::Preprocess::clip(224);
    for a in std::env::args().skip(1) {
        let img = gram_bench::clip::preprocess::load_rgb(std::path::Path::new(&a)).unwrap();
        img.save(format!("/tmp/dec_{}.png", std::path::Path::new(&a).file_stem().unwrap().to_str().unwrap())).unwrap();
        let out = p.eval_u8(&img);
        out.save(format!("/tmp/pre_{}.png", std::path::Path::new(&a).file_stem().unwrap().to_str().unwrap())).unwrap();
    }
}
