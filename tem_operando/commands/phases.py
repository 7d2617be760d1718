"""``tem-operando phases list|show NAME|add FILE.cif``: the phase library."""

from __future__ import annotations

import argparse

NAME = "phases"
HELP = "list, show and add phases of the diffraction phase library"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("The phase library: builtin phases (DOMAIN.md) and your own, added "
                          "from a CIF file or from space group + cell + sites.")
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    sub.add_parser("list", help="list the library phases")
    show = sub.add_parser("show", help="a phase's structure and rings")
    show.add_argument("name", metavar="NAME")
    show.add_argument("--q-max", type=float, default=10.0, metavar="Q",
                      help="largest q of the ring list, 1/nm (default 10)")
    add = sub.add_parser("add", help="add a phase from a CIF file or from parameters",
                         description="Add a phase: `phases add FILE.cif [--name N]` or "
                         "`phases add --name N --space-group 225 --cell 4.08 --site Au,0,0,0`.")
    add.add_argument("cif", nargs="?", metavar="FILE.cif", help="CIF file (read with ase)")
    add.add_argument("--name", help="library name (default: from the formula)")
    add.add_argument("--space-group", metavar="SG", help="space-group number or symbol")
    add.add_argument("--cell", metavar="a,b,c,alpha,beta,gamma",
                     help="lattice: a (cubic), a,b,c or a,b,c,alpha,beta,gamma (Å, degrees)")
    add.add_argument("--site", action="append", default=[], metavar="El,x,y,z[,occ]",
                     help="an asymmetric-unit site (repeat for each)")
    add.add_argument("--setting", type=int, default=1, help="ase space-group setting (1 or 2)")
    add.add_argument("--description", default="", help="free text stored with the phase")
    add.add_argument("--overwrite", action="store_true", help="replace a user phase of that name")
    rm = sub.add_parser("remove", help="remove a user phase")
    rm.add_argument("name", metavar="NAME")


def _numbers(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated numbers, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from ..diffraction import phases as lib

    if args.action == "list":
        for name in lib.list_phases():
            spec = lib.get_phase(name)
            kind = "builtin" if spec.source == "builtin" else "user"
            print(f"{name:10s} {spec.formula:10s} SG {spec.space_group:3d}  {kind:7s}  "
                  f"{spec.description}")
        return 0
    if args.action == "show":
        import pandas as pd

        spec = lib.get_phase(args.name)
        a, b, c, al, be, ga = spec.cellpar
        print(f"{spec.name}  ({spec.formula})  space group {spec.space_group}"
              f"{'' if spec.axes == 'abc' else f' axes {spec.axes}'}  [{spec.source}]")
        print(f"cell  a={a:g} b={b:g} c={c:g} Å  alpha={al:g} beta={be:g} gamma={ga:g}°")
        for site in spec.sites:
            print("site  " + " ".join(str(v) for v in site))
        if spec.description:
            print(spec.description)
        with pd.option_context("display.max_rows", None, "display.width", 120):
            print(lib.ring_list(spec, args.q_max).to_string(
                index=False, float_format=lambda v: f"{v:.4f}"))
        return 0
    if args.action == "remove":
        lib.remove_phase(args.name)
        print(f"removed {args.name}")
        return 0
    # add
    if args.cif:
        if args.space_group or args.cell or args.site:
            raise ValueError("give either FILE.cif or --space-group/--cell/--site, not both")
        spec = lib.add_phase_from_cif(args.cif, args.name, description=args.description,
                                      overwrite=args.overwrite)
    else:
        missing = [o for o, v in (("--name", args.name), ("--space-group", args.space_group),
                                  ("--cell", args.cell), ("--site", args.site)) if not v]
        if missing:
            raise ValueError(f"phases add needs FILE.cif, or {', '.join(missing)}")
        sg = int(args.space_group) if str(args.space_group).isdigit() else args.space_group
        sites = []
        for text in args.site:
            parts = [p.strip() for p in text.split(",")]
            if len(parts) not in (4, 5):
                raise ValueError(f"--site must be El,x,y,z[,occupancy], got {text!r}")
            sites.append([parts[0], *_numbers(",".join(parts[1:]), "--site coordinates")])
        spec = lib.add_phase(args.name, sg, _numbers(args.cell, "--cell"), sites,
                             description=args.description, setting=args.setting,
                             overwrite=args.overwrite)
    rings = lib.ring_list(spec.name, 10.0)
    print(f"added {spec.name} ({spec.formula}, space group {spec.space_group}) to "
          f"{lib.library_dir()}: {len(rings)} rings up to 10 1/nm")
    return 0
