"""The store-layout reader: S-expression syntax, hostile inputs, and the
on-guest verification of the declared FreeBSD source store.

Decisions pinned here (see fruix_dagster/fruix/store_layout.py):

* every top-level datum is searched; a trailing extra datum is fine, a stray
  ``)`` is an error, a second datum naming another source makes it ambiguous;
* only string atoms count — symbols, keywords and anything inside any of the
  three comment kinds are ignored;
* ``<item>/tree`` counts as a mention of ``<item>``;
* a store item that is a symlink to another directory *inside* the store root
  is accepted; one resolving outside the root is refused.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest

from fruix_dagster.errors import SourceError
from fruix_dagster.fruix import sexp
from fruix_dagster.fruix.sexp import DottedList, SexpError, Symbol, read_all
from fruix_dagster.fruix.source import SourceStore
from fruix_dagster.fruix.store_layout import (
    MAX_METADATA_BYTES,
    find_source_store,
    source_from_metadata,
    store_hash_of,
)
from fruix_dagster.guest.local import LocalTransport
from fruix_dagster.settings import SourceSettings
from tests.support.sshguest import STORE_LAYOUT, render_store_layout

ROOT = "/frx/store"
H1 = "12d7704362e95afc2697db63f168b878e082b372"     # hex, as in the Phase 20.2 run
H2 = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"
B32 = "0c9d0kq7ip8qh0i4mh7fw9cc1jnrpzyz"             # Guix base32, 32 characters
SRC1 = f"{ROOT}/{H1}-freebsd-source-default"
SRC2 = f"{ROOT}/{H2}-freebsd-source-default"
KERNEL = f"{ROOT}/{H2}-freebsd-kernel-GENERIC"


def find(text: str | bytes, name: str = "default", store_root: str = ROOT) -> str:
    data = text.encode() if isinstance(text, str) else text
    return find_source_store(data, metadata_path="/run/current-system/metadata/store-layout.scm",
                             store_root=store_root, name=name)


# -- the reader -------------------------------------------------------------------------

def test_reader_reads_structure_and_strings_and_keeps_other_atoms_as_text():
    text = r"""
    (a "s\"q\\b\n\t\x41;\x42C\u00e9" 42 -7 1.5 1/2 #x1F #e1.5 +inf.0
     #t #f #true #\a #\space #\x41 #\( #\) #\" #\; #:key #{odd sym}# |bar ... + -
     (x . y) (x . (y z)) (x y . (z . w)) #(1 #(2)) [sq bracket] ())
    """
    [d] = read_all(text)
    assert d == [
        Symbol("a"), 's"q\\b\n\tABCé', *map(Symbol, ["42", "-7", "1.5", "1/2", "#x1F", "#e1.5", "+inf.0"]),
        *map(Symbol, ["#t", "#f", "#true", "#\\a", "#\\space", "#\\x41", "#\\(", "#\\)", '#\\"', "#\\;", "#:key"]),
        Symbol("odd sym"), Symbol("|bar"), Symbol("..."), Symbol("+"), Symbol("-"),
        DottedList((Symbol("x"),), Symbol("y")), [Symbol("x"), Symbol("y"), Symbol("z")],
        DottedList((Symbol("x"), Symbol("y"), Symbol("z")), Symbol("w")),
        [Symbol("1"), [Symbol("2")]], [Symbol("sq"), Symbol("bracket")], [],
    ]


def test_character_literals_hide_no_string_list_or_comment():
    # `#\"` opens no string, `#\(` no list, `#\;` no comment: the path after them is still found
    assert list(sexp.strings(read_all(r'(#\" "/a" #\( "/b" #\; "/c")'))) == ["/a", "/b", "/c"]


def test_reader_quote_shorthands_and_comments():
    text = """; line comment ("/not/a/datum")
    #| block #| nested |# still comment "x" |#
    'a `(b ,c ,@d) #'e #; (skipped "datum") f #; #; g h i"""
    assert read_all(text) == [
        [Symbol("quote"), Symbol("a")],
        [Symbol("quasiquote"), [Symbol("b"), [Symbol("unquote"), Symbol("c")],
                                [Symbol("unquote-splicing"), Symbol("d")]]],
        [Symbol("syntax"), Symbol("e")],
        Symbol("f"),
        Symbol("i"),
    ]


def test_reader_string_line_continuation_and_guile_hex_escape():
    assert read_all('"ab\\\n    cd"') == ["abcd"]
    assert read_all(r'"\x41B \x2f;x"') == ["AB /x"]   # Guile \xHH (two digits), R7RS \xH…;


def test_reader_strings_are_the_only_str_values():
    data = read_all('(sym "str" #:kw #\\c #(v "in-vector") (a . "tail"))')
    assert list(sexp.strings(data)) == ["str", "in-vector", "tail"]


def test_reader_errors_carry_line_and_column():
    with pytest.raises(SexpError) as e:
        read_all('(store-layout\n  (items\n    ("a" "b"]))', source="/m.scm")
    msg = str(e.value)
    assert msg.startswith("/m.scm:3:13: expected `)` to close the `(` opened at 3:5, found `]` at 3:13")
    assert (e.value.line, e.value.column) == (3, 13)
    assert isinstance(e.value, SourceError)


def test_reader_depth_limit_is_exact_and_iterative():
    assert read_all("(" * 200 + ")" * 200)            # exactly the limit is fine
    for opener in ("(", "#(", "'", "#; "):
        with pytest.raises(SexpError, match="nested at most 200 levels deep"):
            read_all(opener * 201 + "x" + ")" * (201 if "(" in opener else 0))
    t = time.monotonic()
    with pytest.raises(SexpError, match=r"1:201: expected data nested at most 200"):
        read_all("(" * 100_000)
    assert time.monotonic() - t < 2


def test_reader_walk_is_iterative():
    deep: list = []
    for _ in range(50_000):       # deeper than Python's recursion limit
        deep = [deep, "s"]
    assert sum(1 for _ in sexp.strings(deep)) == 50_000


def test_reader_size_limit_counts_bytes():
    ok = b"(" + b"a" * (sexp.MAX_BYTES - 2) + b")"
    assert read_all(ok) == [[Symbol("a" * (sexp.MAX_BYTES - 2))]]
    with pytest.raises(SexpError, match=r"expected at most 1048576 bytes \(1 MiB\), found 1048577 bytes"):
        read_all(ok + b" ")
    with pytest.raises(SexpError, match="found 1048577 bytes"):
        read_all("é" * (sexp.MAX_BYTES // 2) + " ")     # str input: UTF-8 bytes, not characters


def test_reader_non_utf8_names_the_byte_offset():
    with pytest.raises(SexpError) as e:
        read_all(b'(items\n  ("/frx/\xe9t\xe9"))', source="/m.scm")
    assert str(e.value).startswith("/m.scm:2:10: expected UTF-8 text, found the byte 0xe9 at byte offset 16")
    assert "re-encode the file as UTF-8" in str(e.value)


@pytest.mark.parametrize("text, fragment", [
    ("(a . b c)", "expected `)` after the tail of the dotted list at 1:4, found another datum at 1:8"),
    ("( . a)", "expected an element before `.`"),
    ("(a . )", "expected a datum after the `.` at 1:4"),
    (". a", "a lone `.` is only allowed inside a list"),
    ("#(a . b)", "a lone `.` is only allowed inside a list"),
    ("#<procedure car>", "the unreadable object `#<procedure` at 1:1"),
    ("(a #;)", "expected a datum after `#;` (at 1:4), found `)` at 1:6"),
    ("'", "expected a datum after `'` (at 1:1), found end of input at 1:2"),
    ('"\\u12"', "exactly 4 hex digits after `\\u`"),
    ('"\\xD800;"', "a Unicode scalar value"),
    ("#\\", "expected a character after `#\\`"),
    ("#| never closed", "expected `|#` to close the block comment opened at 1:1, found end of input"),
    ("#{ never", "to close the symbol opened with `#{`"),
])
def test_reader_rejects(text, fragment):
    with pytest.raises(SexpError) as e:
        read_all(text, source="/m.scm")
    assert fragment in str(e.value)
    assert str(e.value).startswith("/m.scm:")
    assert str(e.value).endswith(sexp.DEFAULT_HINT)


# -- find_source_store: positive shapes ---------------------------------------------------

def test_test_guest_shape():
    text = render_store_layout([SRC1, KERNEL, f"{ROOT}/{H2}-fruix-development-profile"],
                               system=f"{ROOT}/{H2}-fruix-system-fruix-dev")
    assert find(text) == SRC1


def test_alist_vector_keyword_shape():
    text = f"""
    (fruix-system-metadata #:version 1 #:dev? #t
      (store-root . "{ROOT}")
      (inputs . #((kernel . "{KERNEL}")
                  (freebsd-source . "{SRC1}")
                  (freebsd-source-tree . "{SRC1}/tree")))
      (name . "freebsd-source-default")
      (jobs . 8) (ratio . 1/2) (char . #\\x) 'quoted `(,unquoted))
    """
    assert find(text) == SRC1


def test_base32_hash_and_other_names():
    item = f"{ROOT}/{B32}-freebsd-source-releng-14.3"
    text = f'(items "{item}" "{SRC1}")'
    assert find(text, name="releng-14.3") == item
    assert store_hash_of(item) == B32
    assert find(text, name="default") == SRC1


def test_all_three_comment_kinds_hide_other_sources():
    text = f"""
    ;; "{SRC2}" in a line comment
    #| "{SRC2}"
       #| nested "{SRC2}" |#
       still commented "{SRC2}" |#
    (store-layout
      #; (items ("{SRC2}"))
      (items ("{SRC1}" #;"{SRC2}")))
    """
    assert find(text) == SRC1
    # and the same text without the comment markers is ambiguous (the test can fail)
    with pytest.raises(SourceError, match="found 2 different ones"):
        find(text.replace("#;", "").replace(";;", "").replace("#|", "").replace("|#", ""))


def test_duplicates_and_paths_inside_the_item_are_one_item():
    text = f'(a "{SRC1}") (b ("{SRC1}" "{SRC1}/tree" "{SRC1}/tree/Makefile")) #("{SRC1}")'
    assert find(text) == SRC1


def test_escaped_path_is_decoded_before_matching():
    escaped = SRC1.replace("/", "\\x2f;")
    assert find(f'(items "{escaped}")') == SRC1


def test_trailing_extra_datum_is_fine_but_stray_paren_is_not():
    base = render_store_layout([SRC1])
    assert find(base + "trailing-garbage 42 \"text\"\n") == SRC1
    with pytest.raises(SourceError, match=r"found `\)` at \d+:\d+ with no list open"):
        find(base + ")\n")


def test_names_may_use_dots_plus_and_uppercase():
    item = f"{ROOT}/{H1}-freebsd-source-My_src.v2+x"
    assert find(f'("{item}")', name="My_src.v2+x") == item
    with pytest.raises(SourceError, match=re.escape("found none for 'my_src.v2+x'")):
        find(f'("{item}")', name="my_src.v2+x")


def test_unrelated_strings_mentioning_freebsd_source_are_ignored():
    text = f"""(items "{SRC1}"
      "freebsd-source-default"
      "{ROOT}/{H2}-fruix-freebsd-source-helper"
      "{ROOT}/{H2}-docs/share/my-freebsd-source-notes.txt"
      "see x-freebsd-source-y")"""
    assert find(text) == SRC1


# -- find_source_store: malformed and hostile inputs -----------------------------------------

HOSTILE = [
    # (case id, input, fragments every one of which the message must contain)
    ("unbalanced-parens", render_store_layout([SRC1]).rstrip().rstrip(")"),
     ["expected `)` to close the `(` opened at", "found end of input"]),
    ("unterminated-string", f'(items ("{SRC1}))\n',
     ['expected `"` to close the string opened at 1:9', "found end of input at 2:1"]),
    ("bad-escape", f'(items ("{SRC1}\\q"))',
     ["expected a string escape", "found `\\q` at 1:"]),
    ("no-source-item", render_store_layout([KERNEL]),
     ["found no freebsd-source store item at all", 'source.from = "path"']),
    ("empty-items", "(store-layout (version 1) (items ()))",
     ["found no freebsd-source store item at all"]),
    ("other-name-only", render_store_layout([f"{ROOT}/{H1}-freebsd-source-releng", KERNEL]),
     ["found none for 'default'", f"{H1}-freebsd-source-releng", "set source.name to one of 'releng'"]),
    ("two-different-sources", render_store_layout([SRC1, KERNEL, SRC2]),
     ["found 2 different ones", SRC1, SRC2, "ambiguous"]),
    ("two-layouts", render_store_layout([SRC1]) + render_store_layout([SRC2]),
     ["found 2 different ones"]),
    ("outside-store-root", f'(store-root "/gnu/store") (items ("/gnu/store/{H1}-freebsd-source-default"))',
     ["under the store root /frx/store", f'"/gnu/store/{H1}-freebsd-source-default" outside it',
      'the file declares store-root "/gnu/store"', "set source.store_root"]),
    ("prefix-is-not-containment", f'("/frx/store-evil/{H1}-freebsd-source-default")',
     ["outside it"]),
    ("dotdot-component", f'("{ROOT}/../../tmp/{H1}-freebsd-source-default")',
     ["contains a '..' component", "corrupt or hostile"]),
    ("dotdot-inside-item", f'("{SRC1}" "{SRC1}/tree/../../../etc")',
     ["contains a '..' component"]),
    ("dot-component", f'("{ROOT}/./{H1}-freebsd-source-default")', ["contains a '.' component"]),
    ("double-slash", f'("/frx//store/{H1}-freebsd-source-default")', ["contains '//'"]),
    ("trailing-slash", f'("{SRC1}/")', ["trailing '/'"]),
    ("control-char", f'("{SRC1}\\n")', ["contains a control character"]),
    ("relative-is-ignored-so-none", f'("frx/store/{H1}-freebsd-source-default")',
     ["found no freebsd-source store item at all"]),
    ("nested-in-another-item", f'("{ROOT}/{H2}-profile/{H1}-freebsd-source-default")',
     ["directly under /frx/store", f'nested inside "{ROOT}/{H2}-profile"']),
    ("uppercase-hash", f'("{ROOT}/{H1.upper()}-freebsd-source-default")',
     ["expected a store item name <hash>-freebsd-source-<name>", "32–64"]),
    ("short-hash", f'("{ROOT}/abc123-freebsd-source-default")', ["32–64"]),
    ("empty-name", f'("{ROOT}/{H1}-freebsd-source-")', ["expected a store item name"]),
    ("huge-file", b"(" + b" " * MAX_METADATA_BYTES + b")",
     ["expected at most 1048576 bytes (1 MiB), found 1048578 bytes", "refusing to read it"]),
    ("non-utf8", f'(items ("{SRC1}" "caf'.encode() + b'\xe9"))',
     [f"expected UTF-8 text, found the byte 0xe9 at byte offset {len(SRC1) + 15}", f":1:{len(SRC1) + 16}:"]),
    ("deep-nesting-10000", "(" * 10_000 + f'"{SRC1}"' + ")" * 10_000,
     [":1:201: expected data nested at most 200 levels deep"]),
    ("unreadable-object", f'(items ("{SRC1}" #<procedure car (x)>))', ["unreadable object"]),
]


@pytest.mark.parametrize("text, fragments", [(t, f) for _, t, f in HOSTILE], ids=[c for c, _, _ in HOSTILE])
def test_hostile_and_malformed_layouts_are_refused(text, fragments):
    t = time.monotonic()
    with pytest.raises(SourceError) as e:
        find(text)
    assert time.monotonic() - t < 5
    msg = str(e.value)
    assert msg.startswith("/run/current-system/metadata/store-layout.scm"), msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)
    # every message says what to do
    assert any(w in msg for w in ("set source.", "regenerate", "re-encode", "fix ")), msg


def test_hostile_table_is_big_enough():
    assert len(HOSTILE) >= 12


def test_invalid_arguments_are_refused():
    with pytest.raises(SourceError, match="source.store_root"):
        find(render_store_layout([SRC1]), store_root="/frx/store/")
    with pytest.raises(SourceError, match="source.name"):
        find(render_store_layout([SRC1]), name="../x")


# -- source_from_metadata on a (local) guest ---------------------------------------------------

class RecordingTransport(LocalTransport):
    """LocalTransport that remembers every command and its result; optionally
    runs ``sh`` scripts under another POSIX shell."""

    def __init__(self, *shell: str):
        self.shell = list(shell or ("sh",))
        self.results = []

    def run(self, argv, *, input=None, timeout=None):
        argv = list(argv)
        if argv[0] == "sh":
            argv[:1] = self.shell
        res = super().run(argv, input=input, timeout=timeout)
        self.results.append(res)
        return res


def make_guest(tmp: Path, store_hash: str = H1, name: str = "default", items: list[str] | None = None):
    """A store root with one source item and a metadata file naming it."""
    root = tmp / "frx store $x"           # a blank and a '$' prove the quoting
    item = root / f"{store_hash}-freebsd-source-{name}"
    (item / "tree").mkdir(parents=True)
    (item / "tree" / "Makefile").write_text("all:\n")
    meta = tmp / "run" / "metadata" / "store-layout.scm"
    meta.parent.mkdir(parents=True)
    listed = items if items is not None else [str(item), f"{root}/{H2}-freebsd-kernel-GENERIC"]
    meta.write_text(render_store_layout(listed))
    settings = SourceSettings(from_="system-metadata", metadata=str(meta), store_root=str(root), name=name)
    return root, item, meta, settings


def test_source_from_metadata_success(tmp_path):
    root, item, meta, settings = make_guest(tmp_path)
    transport = RecordingTransport()
    src = source_from_metadata(transport, settings)
    assert src == SourceStore(source_store=str(item), source_root=f"{item}/tree", store_hash=H1)
    assert len(transport.results) == 2          # one bounded read, one verification


SHELLS = [s for s in (("dash",), ("bash", "--posix"), ("posh",)) if shutil.which(s[0])]


@pytest.mark.parametrize("shell", SHELLS, ids=[s[0] for s in SHELLS])
def test_guest_scripts_are_portable_sh(tmp_path, shell):
    """The same scripts under every strict POSIX shell available (FreeBSD's
    sh is not installable here; posh is the strictest stand-in)."""
    root, item, meta, settings = make_guest(tmp_path)
    transport = RecordingTransport(*shell)
    assert source_from_metadata(transport, settings).source_root == f"{item}/tree"
    outside = tmp_path / "outside"
    (outside / "tree").mkdir(parents=True)
    (outside / "tree" / "Makefile").write_text("all:\n")
    shutil.rmtree(item)
    item.symlink_to(outside)
    with pytest.raises(SourceError, match="outside it"):
        source_from_metadata(transport, settings)
    (outside / "tree" / "Makefile").unlink()
    item.unlink()
    item.symlink_to(root / "elsewhere")
    (root / "elsewhere" / "tree").mkdir(parents=True)
    with pytest.raises(SourceError, match="top-level Makefile"):
        source_from_metadata(transport, settings)


def test_store_item_symlinked_out_of_the_root_is_refused(tmp_path):
    root, item, meta, settings = make_guest(tmp_path)
    outside = tmp_path / "evil"
    shutil.copytree(item, outside)
    shutil.rmtree(item)
    item.symlink_to(outside)
    with pytest.raises(SourceError) as e:
        source_from_metadata(LocalTransport(), settings)
    msg = str(e.value)
    assert "to be physically inside the store root" in msg
    assert f'resolves to "{outside.resolve()}" outside it' in msg


def test_store_item_symlinked_within_the_root_is_accepted(tmp_path):
    root, item, meta, settings = make_guest(tmp_path)
    real = root / f"{H2}-freebsd-source-real"
    item.rename(real)
    item.symlink_to(real)
    src = source_from_metadata(LocalTransport(), settings)
    assert src.source_store == str(item) and src.store_hash == H1


def test_store_root_itself_a_symlink_is_fine(tmp_path):
    real_root = tmp_path / "real-store"
    real_root.mkdir()
    link_root = tmp_path / "store"
    link_root.symlink_to(real_root)
    item = link_root / f"{H1}-freebsd-source-default"
    (item / "tree").mkdir(parents=True)
    (item / "tree" / "Makefile").write_text("all:\n")
    meta = tmp_path / "layout.scm"
    meta.write_text(f'("{item}")')
    settings = SourceSettings(metadata=str(meta), store_root=str(link_root))
    assert source_from_metadata(LocalTransport(), settings).source_store == str(item)


def test_tree_symlinked_out_of_the_root_is_refused(tmp_path):
    root, item, meta, settings = make_guest(tmp_path)
    outside = tmp_path / "evil-tree"
    shutil.move(str(item / "tree"), outside)
    (item / "tree").symlink_to(outside)
    with pytest.raises(SourceError, match=r"source tree .*/tree\" on local host to be physically inside"):
        source_from_metadata(LocalTransport(), settings)


def test_missing_tree_is_refused(tmp_path):
    root, item, meta, settings = make_guest(tmp_path)
    shutil.rmtree(item / "tree")
    with pytest.raises(SourceError, match=r"expected a FreeBSD source tree directory .*/tree\" on local host, found none"):
        source_from_metadata(LocalTransport(), settings)
    (item / "tree").write_text("a file, not a directory")
    with pytest.raises(SourceError, match="found none"):
        source_from_metadata(LocalTransport(), settings)


def test_missing_makefile_is_refused(tmp_path):
    root, item, meta, settings = make_guest(tmp_path)
    (item / "tree" / "Makefile").unlink()
    (item / "tree" / "Makefile").mkdir()          # a directory named Makefile is not one
    with pytest.raises(SourceError, match="expected a top-level Makefile"):
        source_from_metadata(LocalTransport(), settings)


def test_item_missing_on_the_guest_is_refused(tmp_path):
    root, item, meta, settings = make_guest(tmp_path)
    shutil.rmtree(item)
    with pytest.raises(SourceError, match="named by the system metadata to exist on local host, found nothing"):
        source_from_metadata(LocalTransport(), settings)
    item.write_text("not a directory")
    with pytest.raises(SourceError, match="to be a directory that can be entered"):
        source_from_metadata(LocalTransport(), settings)


def test_store_root_missing_on_the_guest_is_refused(tmp_path):
    root, item, meta, settings = make_guest(tmp_path)
    shutil.rmtree(root)
    with pytest.raises(SourceError, match=r"expected the store root .* to be a directory on local host, found none"):
        source_from_metadata(LocalTransport(), settings)


def test_missing_metadata_file_says_what_to_do(tmp_path):
    root, item, meta, settings = make_guest(tmp_path)
    meta.unlink()
    with pytest.raises(SourceError) as e:
        source_from_metadata(LocalTransport(), settings)
    msg = str(e.value)
    assert f"expected a development-enabled Fruix system with its store layout at {meta}" in msg
    assert "found no such file" in msg and 'set source.from = "path"' in msg


def test_metadata_that_is_a_directory_is_refused(tmp_path):
    root, item, meta, settings = make_guest(tmp_path)
    meta.unlink()
    meta.mkdir()
    with pytest.raises(SourceError, match="to be a regular file"):
        source_from_metadata(LocalTransport(), settings)


def test_oversized_metadata_is_refused_without_reading_it(tmp_path):
    root, item, meta, settings = make_guest(tmp_path)
    with open(meta, "r+b") as f:                       # sparse: 8 GiB that must never be read
        f.truncate(8 << 30)
    transport = RecordingTransport()
    t = time.monotonic()
    with pytest.raises(SourceError) as e:
        source_from_metadata(transport, settings)
    assert time.monotonic() - t < 5
    assert f"{meta} on local host to be at most 1048576 bytes, found {8 << 30} bytes" in str(e.value)
    assert len(transport.results) == 1
    assert len(transport.results[0].stdout) < 64       # only the size came back


def test_metadata_just_over_the_limit_is_refused_and_at_the_limit_accepted(tmp_path):
    root, item, meta, settings = make_guest(tmp_path)
    layout = render_store_layout([str(item)]).encode()
    exact = layout + b";" + b"x" * (MAX_METADATA_BYTES - len(layout) - 2) + b"\n"
    assert len(exact) == MAX_METADATA_BYTES
    meta.write_bytes(exact)
    assert source_from_metadata(LocalTransport(), settings).source_store == str(item)
    meta.write_bytes(exact + b" ")
    transport = RecordingTransport()
    with pytest.raises(SourceError, match="found 1048577 bytes; refusing to read it"):
        source_from_metadata(transport, settings)
    assert len(transport.results[0].stdout) < 64


def test_parse_errors_from_the_guest_name_the_file_and_position(tmp_path):
    root, item, meta, settings = make_guest(tmp_path)
    meta.write_text(f'(store-layout\n  (items ("{item}"\n')
    with pytest.raises(SourceError) as e:
        source_from_metadata(LocalTransport(), settings)
    assert str(e.value).startswith(f"{meta}:3:1: expected `)` to close the `(` opened at 2:10")
    assert 'set source.from = "path"' in str(e.value)


def test_other_name_in_metadata_on_the_guest(tmp_path):
    root, item, meta, settings = make_guest(tmp_path, name="releng")
    assert source_from_metadata(LocalTransport(), settings).source_store == str(item)
    with pytest.raises(SourceError, match="set source.name to one of 'releng'"):
        source_from_metadata(LocalTransport(), replace(settings, name="default"))


def test_read_is_bounded_even_if_the_file_grows_after_the_size_check(tmp_path, monkeypatch):
    """A `wc` that reports a small size stands in for a file growing between the
    size check and the read: at most limit + 1 bytes may cross the wire."""
    root, item, meta, settings = make_guest(tmp_path)
    meta.write_bytes(render_store_layout([str(item)]).encode() + b";" * (3 * MAX_METADATA_BYTES))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "wc").write_text("#!/bin/sh\ncat > /dev/null; echo 100\n")
    (bin_dir / "wc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    transport = RecordingTransport()
    with pytest.raises(SourceError, match="found more \\(it grew while being read\\)"):
        source_from_metadata(transport, settings)
    assert len(transport.results[0].stdout) == len(b"100\n") + MAX_METADATA_BYTES + 1


# -- against the SSH test guest (real sshd, its login shell, a read-only /frx/store) ----------

class SshClientTransport(LocalTransport):
    """Runs argv on an SshGuest through the system ssh client (argv joined with
    shlex.join, as the remote login shell needs), so the scripts and their
    positional parameters make the real trip through a remote shell."""

    def __init__(self, guest):
        self.guest = guest
        self.description = f"ssh guest {guest.name}"

    def run(self, argv, *, input=None, timeout=None):
        return super().run(self.guest.ssh_command(list(argv)), input=input, timeout=timeout or 60)


def test_on_the_ssh_test_guest(ssh_guest):
    transport = SshClientTransport(ssh_guest)
    settings = SourceSettings()           # the real defaults: /run/current-system/metadata/…, /frx/store
    src = source_from_metadata(transport, settings)
    assert src == SourceStore(ssh_guest.source_store, f"{ssh_guest.source_store}/tree", ssh_guest.store_hash)

    other = ssh_guest.add_source_store("b" * 40, "default")
    ssh_guest.set_store_layout(render_store_layout([ssh_guest.source_store, other]))
    with pytest.raises(SourceError, match="found 2 different ones"):
        source_from_metadata(transport, settings)

    ssh_guest.set_store_layout(f';; switched\n(store-layout (items #("{other}" "{other}/tree")))\n')
    assert source_from_metadata(transport, settings).store_hash == "b" * 40

    stale = f"{ROOT}/{'c' * 40}-freebsd-source-default"
    ssh_guest.set_store_layout(render_store_layout([stale]))
    with pytest.raises(SourceError, match=f"expected the store item \"{stale}\" named by the system "
                                          f"metadata to exist on ssh guest {ssh_guest.name}, found nothing"):
        source_from_metadata(transport, settings)

    ssh_guest.guest_path(STORE_LAYOUT).unlink()
    with pytest.raises(SourceError, match="expected a development-enabled Fruix system"):
        source_from_metadata(transport, settings)
