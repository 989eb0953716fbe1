#!/usr/bin/env python3
"""Selection oracle for dupr's differential tests (tests/it/select_interop.rs).

Run with the python of the duplicity 3.2.1 venv
(``$(dirname $DUPR_DUPLICITY3)/python select_oracle.py < cases.json``).
It imports stock duplicity's own modules and answers, for every case, which
paths duplicity's ``Select`` iterator would hand to the backup: the same code
path as ``duplicity full`` (cli_main.process_command_line -> set_selection ->
cli_util.parse_selection_args -> selection.Select.set_iter), minus the
backup itself, so hundreds of cases run in one process in seconds.

Input (stdin), a JSON list of cases; all byte strings are lowercase hex so
that non-UTF-8 names and arguments travel unchanged:

    [{"root": "<hex of the source dir>",
      "opts": [["--include", "<hex arg>"], ["--filter-ignorecase", null], ...],
      "null_separator": false}, ...]

Output (stdout), a JSON list with one entry per case, in order:

    {"paths": ["<hex>", ...]}  selected paths relative to the root, index
                               components joined by '/', the root itself as
                               '.', sorted by their bytes
    {"error": N}               duplicity would exit with code N (a FatalError,
                               or a command-line error: 23, like duplicity's
                               own handling of CommandLineError)
    {"exception": "..."}       anything else (a Python exception that the real
                               program would turn into exit code 30); the
                               test treats this as a bug in the case generator

How each option is turned into duplicity's config, as its argparse actions do
(cli_data.py / cli_util.py):

* every selection option appends (option, arg) to config.select_opts; the
  filelist options (--include-filelist, --exclude-filelist, --files-from) also
  open the file with io.open(path, "rt", encoding="UTF-8") (universal
  newlines!) into config.select_files, in option order;
* --exclude-older-than's argument goes through dup_time.genstrtotime;
* an empty argument is a command-line error (exit 23);
* --null-separator sets config.null_separator (read while parsing filelists).
"""

import io
import json
import logging
import os
import sys
import traceback

NO_ARG = {
    "--exclude-device-files",
    "--exclude-other-filesystems",
    "--filter-globbing",
    "--filter-ignorecase",
    "--filter-literal",
    "--filter-regexp",
    "--filter-strictcase",
}
FILELIST = {"--include-filelist", "--exclude-filelist", "--files-from"}
WITH_ARG = {
    "--include",
    "--exclude",
    "--include-regexp",
    "--exclude-regexp",
    "--exclude-if-present",
    "--exclude-older-than",
}

USER_ERROR = 23  # log.ErrorCode.user_error: what __main__ makes of a CommandLineError


def main():
    # duplicity writes log messages to the stdout/stderr it finds at log.setup()
    # time: keep our real stdout for the JSON answer and give it /dev/null.
    real_stdout = sys.stdout
    devnull = open(os.devnull, "w")
    sys.stdout = devnull

    import duplicity  # noqa: F401  (installs gettext's _ into builtins)
    from duplicity import cli_util, config, dup_time, errors, log, path, selection

    log.setup()
    log.setverbosity(log.ERROR)
    logger = logging.getLogger("duplicity")
    for h in list(logger.handlers):
        logger.removeHandler(h)
    logger.addHandler(logging.NullHandler())
    dup_time.setcurtime()

    cases = json.load(sys.stdin)
    answers = []
    for case in cases:
        files = []
        try:
            answers.append(run_case(case, files, cli_util, config, dup_time, errors, path, selection))
        except errors.FatalError as e:
            answers.append({"error": int(e.code)})
        except errors.UserError:
            answers.append({"error": USER_ERROR})
        except Exception:
            answers.append({"exception": traceback.format_exc()})
        finally:
            for f in files:
                f.close()
            config.select_opts = []
            config.select_files = []
            config.null_separator = False

    sys.stdout = real_stdout
    json.dump(answers, real_stdout)
    real_stdout.write("\n")
    real_stdout.flush()


def run_case(case, files, cli_util, config, dup_time, errors, path, selection):
    root = bytes.fromhex(case["root"])
    config.null_separator = bool(case.get("null_separator", False))

    # The argparse stage (cli_util.AddSelectionAction / AddFilelistAction).
    select_opts = []
    for opt, harg in case["opts"]:
        if opt in NO_ARG:
            select_opts.append((opt, []))
            continue
        arg = os.fsdecode(bytes.fromhex(harg))
        if opt in FILELIST:
            select_opts.append((opt, arg))
            try:
                files.append(io.open(os.fsencode(arg), "rt", encoding="UTF-8"))
            except Exception:
                return {"error": USER_ERROR}
        elif opt in WITH_ARG:
            if arg == "":
                return {"error": USER_ERROR}
            if opt == "--exclude-older-than":
                try:
                    arg = dup_time.genstrtotime(arg)
                except dup_time.TimeException:
                    return {"error": USER_ERROR}
            select_opts.append((opt, arg))
        else:
            raise ValueError(f"oracle: unknown option {opt}")
    config.select_opts = select_opts
    config.select_files = files

    # cli_main: local_path = Path(Path(source).get_canonical()); then set_selection().
    local_path = path.Path(path.Path(root).get_canonical())
    sel = selection.Select(local_path)
    cli_util.parse_selection_args(sel, config.select_opts, config.select_files)
    sel.set_iter()

    out = []
    for p in sel:
        if not p.type:
            # Listed by --files-from but absent: diffdir.get_delta_iter skips
            # paths that do not exist, so the backup does not hold them.
            continue
        rel = b"/".join(p.index) if p.index else b"."
        out.append(rel)
    if len(out) != len(set(out)):
        raise AssertionError(f"oracle: duplicate paths selected: {out}")
    out.sort()
    return {"paths": [r.hex() for r in out]}


if __name__ == "__main__":
    main()
