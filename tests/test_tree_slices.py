"""Slice globs: table-driven semantics, validation, and select() giving complete trees."""

from __future__ import annotations

import hashlib

import pytest

from fruix_dagster.errors import TreeError
from fruix_dagster.tree import (
    BOOTLOADER_GLOBS,
    DEFAULT_SLICES,
    HEADERS_GLOBS,
    Entry,
    Manifest,
    matches,
    select,
    validate_globs,
)

# (glob, path, expected)
TABLE = [
    # literal
    ("usr", b"usr", True),
    ("usr", b"usr/bin", False),
    ("usr/bin", b"usr", False),
    ("usr/bin", b"usr/bin", True),
    ("a.b", b"axb", False),  # '.' is literal, not a regex dot
    ("a+b", b"a+b", True),
    ("a(b)", b"a(b)", True),
    # * within one component
    ("*", b"usr", True),
    ("*", b"usr/bin", False),
    ("*", b".hidden", True),  # leading dots are not special
    ("usr/*", b"usr/bin", True),
    ("usr/*", b"usr", False),
    ("usr/*", b"usr/bin/ls", False),
    ("boot/loader*", b"boot/loader", True),
    ("boot/loader*", b"boot/loader.efi", True),
    ("boot/loader*", b"boot/loader/x", False),
    ("boot/*.efi", b"boot/loader.efi", True),
    ("boot/*.efi", b"boot/efi", False),
    ("boot/*.efi", b"boot/x/y.efi", False),
    ("*a*b*", b"xxaxxbxx", True),
    ("*a*b*", b"xxa/xxbxx", False),
    ("x**y", b"xy", True),  # '**' inside a component is just two '*'
    ("x**y", b"x/y", False),
    # ? is exactly one byte, never '/'
    ("?", b"a", True),
    ("?", b"ab", False),
    ("a?c", b"a/c", False),
    ("a?c", b"abc", True),
    ("?", b"\xe9", True),  # bytes, not characters
    # [...] sets
    ("[abc]", b"b", True),
    ("[abc]", b"d", False),
    ("[a-c]x", b"bx", True),
    ("[a-c]x", b"dx", False),
    ("[!a-c]x", b"dx", True),
    ("[!a-c]x", b"ax", False),
    ("a[!x]b", b"a/b", False),  # a negated set never matches '/'
    ("a[+-0]b", b"a/b", False),  # nor does a range that spans '/'
    ("a[+-0]b", b"a.b", True),
    ("[]]", b"]", True),
    ("[]a]", b"a", True),
    ("[-a]", b"-", True),
    ("[a-]", b"-", True),
    ("[^a]", b"^", True),  # '^' is literal, '!' negates
    ("[^a]", b"b", False),
    ("x\\y", b"x\\y", True),  # no backslash escaping
    # ** as a whole component
    ("**", b"a", True),
    ("**", b"a/b/c", True),
    ("usr/include/**", b"usr/include", True),
    ("usr/include/**", b"usr/include/stdio.h", True),
    ("usr/include/**", b"usr/include/sys/types.h", True),
    ("usr/include/**", b"usr/includes", False),
    ("usr/include/**", b"usr", False),
    ("usr/include/**", b"usr/local/include/x.h", False),
    ("**/*.h", b"x.h", True),
    ("**/*.h", b"usr/include/sys/x.h", True),
    ("**/*.h", b"usr/include/sys/x.c", False),
    ("usr/**/lib", b"usr/lib", True),
    ("usr/**/lib", b"usr/local/lib", True),
    ("usr/**/lib", b"usr/a/b/c/lib", True),
    ("usr/**/lib", b"usr/lib/x", False),
    ("usr/**/lib", b"usrlib", False),
    ("usr/**/**/lib", b"usr/lib", True),
    ("**/include/**", b"include", True),
    ("**/include/**", b"a/b/include/c/d", True),
    ("**/include/**", b"a/includes/c", False),
    ("a/**/b/**/c", b"a/b/c", True),
    ("a/**/b/**/c", b"a/x/b/y/z/c", True),
    ("a/**/b/**/c", b"a/x/c", False),
    # odd bytes in paths
    ("*", b"new\nline", True),
    ("new?line", b"new\nline", True),
    ("caf*", b"caf\xe9", True),
    (b"caf\xe9", b"caf\xe9", True),
    ("caf\udce9", b"caf\xe9", True),  # str globs use surrogateescape
    ("café", b"caf\xc3\xa9", True),
]


@pytest.mark.parametrize("glob, path, expected", TABLE, ids=[f"{g!r}~{p!r}" for g, p, _ in TABLE])
def test_glob_table(glob, path, expected):
    assert matches(path, [glob]) is expected


def test_any_glob_of_a_list_matches():
    assert matches(b"boot/lua/core.lua", BOOTLOADER_GLOBS)
    assert matches(b"boot/defaults", BOOTLOADER_GLOBS)
    assert matches(b"boot/loader.conf", BOOTLOADER_GLOBS)
    assert not matches(b"boot/kernel/kernel", BOOTLOADER_GLOBS)
    assert not matches(b"boot", BOOTLOADER_GLOBS)
    assert matches(b"usr/share/mk/bsd.prog.mk", HEADERS_GLOBS)
    assert matches(b"usr/include", HEADERS_GLOBS)
    assert not matches(b"usr/share/man", HEADERS_GLOBS)


def test_default_constants():
    assert list(HEADERS_GLOBS) == ["usr/include/**", "usr/share/mk/**"]
    assert list(BOOTLOADER_GLOBS) == ["boot/loader*", "boot/*.efi", "boot/defaults/**", "boot/lua/**"]
    assert DEFAULT_SLICES == {"headers": HEADERS_GLOBS, "bootloader": BOOTLOADER_GLOBS}
    for globs in DEFAULT_SLICES.values():
        validate_globs(globs)


@pytest.mark.parametrize(
    "globs, needle",
    [
        ([""], "empty"),
        ([], "empty list"),
        ("usr/include/**", "single string"),
        (["/usr/include"], "absolute"),
        (["usr/../etc"], "'..'"),
        (["../x"], "'..'"),
        (["./usr"], "'.'"),
        (["usr//include"], "empty component"),
        (["usr/include/"], "empty component"),
        (["a\0b"], "NUL"),
        (["[abc"], "unterminated"),
        (["x[]"], "unterminated"),  # ']' first is literal, so nothing closes it
        (["[z-a]"], "descending"),
        ([3], "int"),
        (["ok/**", "../bad"], "'..'"),
    ],
)
def test_invalid_globs(globs, needle):
    with pytest.raises(TreeError) as info:
        validate_globs(globs)
    assert needle in str(info.value)
    assert "expected" in str(info.value)
    with pytest.raises(TreeError):
        matches(b"x", globs)


def _tree(*specs):
    entries = []
    for spec in specs:
        if spec.endswith(b"/"):
            entries.append(Entry(spec[:-1], "dir", 0o755, 0, None, None))
        elif b" -> " in spec:
            path, target = spec.split(b" -> ")
            entries.append(Entry(path, "symlink", 0o777, 0, None, target))
        else:
            entries.append(Entry(spec, "file", 0o644, len(spec), hashlib.sha256(spec).hexdigest(), None))
    return Manifest(entries)


WORLD = _tree(
    b"bin/", b"bin/sh",
    b"boot/", b"boot/loader", b"boot/loader.efi", b"boot/loader.conf", b"boot/boot1.efi",
    b"boot/kernel/", b"boot/kernel/kernel",
    b"boot/defaults/", b"boot/defaults/loader.conf",
    b"boot/lua/", b"boot/lua/core.lua", b"boot/lua/gfx/", b"boot/lua/gfx/logo.lua",
    b"usr/", b"usr/bin/", b"usr/bin/cc",
    b"usr/include/", b"usr/include/stdio.h", b"usr/include/sys/", b"usr/include/sys/types.h",
    b"usr/include/machine -> ../../sys/amd64/include",
    b"usr/share/", b"usr/share/man/", b"usr/share/man/ls.1",
    b"usr/share/mk/", b"usr/share/mk/bsd.prog.mk",
)


def test_select_headers_is_a_complete_tree():
    got = select(WORLD, HEADERS_GLOBS)
    assert [e.path for e in got] == [
        b"usr", b"usr/include", b"usr/include/machine", b"usr/include/stdio.h", b"usr/include/sys",
        b"usr/include/sys/types.h", b"usr/share", b"usr/share/mk", b"usr/share/mk/bsd.prog.mk",
    ]
    for entry in got:
        assert WORLD.get(entry.path) == entry  # entries are copied unchanged
        parent = entry.path.rpartition(b"/")[0]
        assert not parent or got.get(parent).kind == "dir"


def test_select_bootloader():
    got = select(WORLD, BOOTLOADER_GLOBS)
    assert [e.path for e in got] == [
        b"boot", b"boot/boot1.efi", b"boot/defaults", b"boot/defaults/loader.conf", b"boot/loader",
        b"boot/loader.conf", b"boot/loader.efi", b"boot/lua", b"boot/lua/core.lua", b"boot/lua/gfx",
        b"boot/lua/gfx/logo.lua",
    ]
    assert got.total_size == sum(e.size for e in got if e.kind == "file")


def test_select_directory_glob_selects_only_the_directory():
    got = select(WORLD, ["boot/lua"])
    assert [e.path for e in got] == [b"boot", b"boot/lua"]


def test_select_nothing_and_everything():
    assert len(select(WORLD, ["nothing/here/**"])) == 0
    assert select(WORLD, ["**"]) == WORLD


def test_select_refuses_incomplete_manifest():
    broken = _tree(b"usr/include/stdio.h")  # no 'usr' or 'usr/include' directory entries
    with pytest.raises(TreeError, match="ancestor"):
        select(broken, HEADERS_GLOBS)
    through_link = _tree(b"usr -> elsewhere", b"usr/include/", b"usr/include/x.h")
    with pytest.raises(TreeError, match="is a symlink"):
        select(through_link, HEADERS_GLOBS)
