#!/usr/bin/env python
"""Coverage-guided fuzzing of decaf's readers with atheris (libFuzzer for Python); optional.

Usage:  pip install -e ".[fuzz]"
        python scripts/atheris_fuzz.py --reader caffemodel --seconds 300 [-- LIBFUZZER_ARGS]

Readers: prototxt_net (a net prototxt, built as decaf.Net(TEST)), caffemodel (weights copied
into the repository's tiny net, as Net(..., weights=...)), binaryproto (a mean file). The
corpus starts from the real files the reader of tests/fuzz/readers.py uses as seeds; atheris
mutates them, guided by the coverage of the decaf package. Each input runs as
tests/fuzz/harness.run_case runs a case (a fresh directory holding the file): ending in success
or in a decaf error naming the file is fine; an unnamed decaf error or any other exception is a
finding, and libFuzzer stops and writes the input to ``<out>/crash-<sha1>``. Hangs past
``--timeout`` seconds and memory past ``--rss-mb`` are findings of libFuzzer's own. A finding
replays with:  python scripts/atheris_fuzz.py --reader R <out>/crash-...

This is a complement of scripts/fuzz.py (mutations chosen by decaf's own mutators, every reader,
run in worker processes); decaf does not depend on atheris.
"""
import argparse
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

READERS = {
    # reader name: the file the input becomes (caffemodel: beside the tiny net's prototxt)
    "prototxt_net": "net.prototxt",
    "caffemodel": "w.caffemodel",
    "binaryproto": "mean.binaryproto",
}


class Finding(Exception):
    """A reader ended in an unnamed decaf error or a foreign exception."""


def _seed_files(name, readers):
    reader = readers.READERS[name]
    seeds = reader.seeds()
    if name == "caffemodel":
        proto = seeds[0][0]          # the tiny net; its weights and the others' are the seeds
        return [w for p, w in seeds if p == proto], open(proto, "rb").read()
    return list(seeds), None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ours, rest = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reader", choices=sorted(READERS), required=True)
    parser.add_argument("--seconds", type=int, default=300, help="total run time")
    parser.add_argument("--timeout", type=int, default=20, help="seconds per input")
    parser.add_argument("--rss-mb", type=int, default=4096, help="memory limit of the process")
    parser.add_argument("--out", default=None, help="corpus and findings (default: a temp dir)")
    args, replay = parser.parse_known_args(ours)
    os.environ.setdefault("GLOG_minloglevel", "2")   # before decaf: no log lines per input
    try:
        import atheris
    except ImportError:
        parser.error('atheris is not installed: pip install -e ".[fuzz]"')

    from tests.fuzz import harness, readers
    with atheris.instrument_imports(include=["decaf"]):
        import decaf  # noqa: F401 (instrumented for coverage)
        import decaf.data.transformer  # noqa: F401
        import decaf.solver_state  # noqa: F401

    seeds, proto = _seed_files(args.reader, readers)
    main_file = READERS[args.reader]
    out = args.out or tempfile.mkdtemp(prefix="decaf-atheris-%s-" % args.reader)
    corpus = os.path.join(out, "corpus")
    os.makedirs(corpus, exist_ok=True)
    for i, path in enumerate(seeds):
        with open(path, "rb") as src, open(os.path.join(corpus, "seed%03d" % i), "wb") as dst:
            dst.write(src.read())

    def one_input(data):
        files = {main_file: bytes(data)}
        if proto is not None:
            files["net.prototxt"] = proto
        case = {"reader": args.reader, "files": files, "main": main_file}
        status, detail = harness.run_case(case)
        if status not in ("ok", "error"):
            raise Finding("%s: %s" % (status, detail))

    fuzzer_args = [sys.argv[0]] + rest + replay
    if not replay:   # a run (not the replay of given inputs)
        fuzzer_args += ["-max_total_time=%d" % args.seconds, "-timeout=%d" % args.timeout,
                        "-rss_limit_mb=%d" % args.rss_mb, "-artifact_prefix=%s/" % out, corpus]
    print("decaf atheris: reader %s, %d seeds, corpus and findings in %s"
          % (args.reader, len(seeds), out), flush=True)
    atheris.Setup(fuzzer_args, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
