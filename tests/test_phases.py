"""The phase library: structures, ring lists (against the lattice formulas and py4DSTEM), user phases."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tem_operando.diffraction import phases as P
from tem_operando.diffraction.phases import (
    PhaseLibraryError,
    UnknownPhaseError,
    add_phase,
    add_phase_from_cif,
    get_phase,
    list_phases,
    remove_phase,
    ring_list,
)
from tem_operando.errors import TemOperandoError

DOMAIN_PHASES = ["Au", "Al", "Na", "Na2O", "Na2S", "NaF", "Sn", "Na15Sn4", "Sb", "Na3Sb", "MoO3",
                 "Mo", "FeS2", "Fe", "ZnO", "Zn", "Co3O4", "Co", "NiO", "Ni", "CuO", "Cu", "Cu2O",
                 "TiO2"]

#: atoms per conventional cell of each builtin phase (checks the Wyckoff multiplicities)
ATOMS_PER_CELL = {"Au": 4, "Al": 4, "Na": 2, "Na2O": 12, "Na2S": 12, "NaF": 8, "Sn": 4,
                  "Na15Sn4": 76, "Sb": 6, "Na3Sb": 8, "MoO3": 16, "Mo": 2, "FeS2": 12, "Fe": 2,
                  "ZnO": 4, "Zn": 2, "Co3O4": 56, "Co": 2, "NiO": 8, "Ni": 4, "CuO": 8, "Cu": 4,
                  "Cu2O": 6, "TiO2": 12}


@pytest.fixture
def library(tmp_path, monkeypatch):
    """An empty user library in a tmp dir."""
    monkeypatch.setenv(P.DATA_DIR_ENV, str(tmp_path / "data"))
    return tmp_path / "data" / "phases"


def _families(label: str) -> list[tuple[int, int, int]]:
    out = []
    for part in label.split("+"):
        nums = [int(v) for v in (part.split() if " " in part else re.findall(r"-?\d", part))]
        assert len(nums) == 3, label
        out.append(tuple(nums))
    return out


def _d_formula(hkl, cellpar) -> float:
    """d in Å from the general (triclinic) metric, so it covers every crystal system."""
    a, b, c, al, be, ga = cellpar
    al, be, ga = np.radians([al, be, ga])
    g = np.array([
        [a * a, a * b * np.cos(ga), a * c * np.cos(be)],
        [a * b * np.cos(ga), b * b, b * c * np.cos(al)],
        [a * c * np.cos(be), b * c * np.cos(al), c * c],
    ])
    h = np.asarray(hkl, float)
    return 1.0 / np.sqrt(h @ np.linalg.inv(g) @ h)


# ---------------------------------------------------------------------------------------------


def test_module_import_does_not_import_py4dstem_or_ase():
    code = ("import sys, tem_operando.diffraction.phases as p; "
            "assert 'py4DSTEM' not in sys.modules and 'ase' not in sys.modules; "
            "r = p.ring_list('Au'); assert 'py4DSTEM' not in sys.modules, 'cache not used'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_library_lists_every_domain_phase(library):
    names = list_phases()
    assert names[: len(DOMAIN_PHASES)] == DOMAIN_PHASES
    for name in DOMAIN_PHASES:
        spec = get_phase(name.lower())
        assert spec.name == name and spec.source == "builtin"
        assert len(spec.cellpar) == 6


@pytest.mark.parametrize("name", DOMAIN_PHASES)
def test_expanded_cells_have_the_right_number_of_atoms(name):
    symbols, frac, _cellpar, _occ = P.expand_sites(name)
    assert len(symbols) == ATOMS_PER_CELL[name]
    assert frac.shape == (len(symbols), 3) and np.all((frac >= 0) & (frac < 1))
    # no two atoms on top of each other
    d = frac[:, None, :] - frac[None, :, :]
    d -= np.rint(d)
    dist = np.linalg.norm(d, axis=2) + np.eye(len(frac))
    assert dist.min() > 0.05


def test_unknown_phase_error_lists_names(library):
    with pytest.raises(UnknownPhaseError) as err:
        get_phase("Unobtainium")
    assert isinstance(err.value, KeyError) and isinstance(err.value, TemOperandoError)
    msg = str(err.value)
    assert "Unobtainium" in msg and "Au" in msg and "Na15Sn4" in msg
    with pytest.raises(UnknownPhaseError):
        ring_list("Unobtainium")


def test_ring_list_columns_sorted_and_normalised():
    rings = ring_list("Na2O", 10.0)
    assert list(rings.columns) == ["q_inv_nm", "d_nm", "hkl", "multiplicity", "intensity"]
    assert np.all(np.diff(rings["q_inv_nm"]) > 0)
    np.testing.assert_allclose(rings["d_nm"], 1.0 / rings["q_inv_nm"])
    assert rings["intensity"].max() == pytest.approx(1.0)
    assert rings["intensity"].min() >= 1e-4
    assert rings["q_inv_nm"].max() <= 10.0
    assert rings["multiplicity"].dtype.kind == "i"
    with pytest.raises(ValueError):
        ring_list("Au", 0.0)


def test_gold_rings():
    a_nm = 0.40782
    rings = ring_list("Au", 10.0)
    assert list(rings["hkl"][:4]) == ["111", "200", "220", "311"]
    np.testing.assert_allclose(rings["d_nm"][:3], [a_nm / np.sqrt(3), a_nm / 2, a_nm / np.sqrt(8)],
                               rtol=1e-9)
    assert list(rings["multiplicity"][:3]) == [8, 6, 12]
    i111, i200 = rings["intensity"][:2]
    assert i111 > i200 and i111 == pytest.approx(1.0)


def _allowed_d(cellpar, rule, q_max_inv_nm):
    a = cellpar[0]
    out = set()
    n = int(np.ceil(q_max_inv_nm / 10 * a)) + 1
    for h in range(-n, n + 1):
        for k in range(-n, n + 1):
            for l in range(-n, n + 1):
                if (h, k, l) == (0, 0, 0) or not rule(h, k, l):
                    continue
                s = h * h + k * k + l * l
                if np.sqrt(s) / a * 10 <= q_max_inv_nm:
                    out.add(s)
    return sorted(out)


def _fcc(h, k, l):
    return len({h % 2, k % 2, l % 2}) == 1


def _bcc(h, k, l):
    return (h + k + l) % 2 == 0


@pytest.mark.parametrize("name", ["Au", "Al", "Na2O", "Na2S", "NaF", "NiO", "Ni", "Cu"])
def test_fcc_extinctions(name):
    spec = get_phase(name)
    rings = ring_list(name, 11.0)
    for label in rings["hkl"]:
        for hkl in _families(label):
            assert _fcc(*hkl), (name, label)
    # every allowed reflection is present: one ring per allowed h²+k²+l² (d = a/sqrt(s))
    a = spec.cellpar[0]
    s_rings = sorted(round((a / (10 * d)) ** 2) for d in rings["d_nm"])
    assert s_rings == _allowed_d(spec.cellpar, _fcc, 11.0)


@pytest.mark.parametrize("name", ["Mo", "Fe", "Na"])
def test_bcc_extinctions(name):
    spec = get_phase(name)
    rings = ring_list(name, 11.0)
    assert rings["hkl"].iloc[0] == "110"
    for label in rings["hkl"]:
        for hkl in _families(label):
            assert _bcc(*hkl), (name, label)
    a = spec.cellpar[0]
    s_rings = sorted(round((a / (10 * d)) ** 2) for d in rings["d_nm"])
    assert s_rings == _allowed_d(spec.cellpar, _bcc, 11.0)


def test_beta_tin_rings():
    rings = ring_list("Sn", 10.0)
    first = rings.iloc[:2]
    assert list(first["hkl"]) == ["200", "101"]
    np.testing.assert_allclose(first["d_nm"], [0.29159, 0.27932], atol=2e-5)
    assert list(first["multiplicity"]) == [4, 8]
    # Integrated ring intensity of an electron ring pattern ∝ |F|² m / q (flat Ewald sphere):
    # then 200 and 101 are the two strongest rings, as in measured β-Sn patterns.
    ring_strength = rings["intensity"] / rings["q_inv_nm"]
    assert set(rings["hkl"][np.argsort(-ring_strength.to_numpy())[:2]]) == {"200", "101"}
    assert 0.5 < first["intensity"].iloc[0] / first["intensity"].iloc[1] < 2.0


@pytest.mark.parametrize("name", ["Sn", "TiO2", "Zn", "Co", "ZnO", "Sb", "Na3Sb", "Na15Sn4",
                                  "Co3O4", "FeS2", "Cu2O", "MoO3", "CuO"])
def test_d_spacings_match_the_lattice_formula(name):
    spec = get_phase(name)
    rings = ring_list(name, 10.0)
    assert len(rings) >= 3
    for label, d_nm in zip(rings["hkl"], rings["d_nm"]):
        for hkl in _families(label):
            assert 10 * d_nm == pytest.approx(_d_formula(hkl, spec.cellpar), rel=1e-4), (name, label)


def test_known_labels():
    assert ring_list("Sb")["hkl"].iloc[ring_list("Sb")["intensity"].argmax()] == "012"
    moo3 = ring_list("MoO3")
    assert moo3["hkl"].iloc[0] == "020"  # the layer spacing b/2 = 0.693 nm (Pbnm axes)
    assert moo3["d_nm"].iloc[0] == pytest.approx(1.3856 / 2, rel=1e-9)
    zn = ring_list("Zn")
    assert list(zn["hkl"][:3]) == ["002", "100", "101"]


# --- the committed cache -----------------------------------------------------------------------


def test_cache_file_covers_every_builtin_with_current_fingerprint():
    data = json.loads(P._CACHE_FILE.read_text())
    assert data["q_max_inv_nm"] == P.BUILTIN_CACHE_Q_MAX_INV_NM
    for name in DOMAIN_PHASES:
        entry = data["phases"][name]
        assert entry["fingerprint"] == get_phase(name).fingerprint(), (
            f"{name} changed: run python -m tem_operando.diffraction.phases --rebuild-cache")


@pytest.mark.parametrize("name", ["Au", "Na2O", "Sn", "Sb", "CuO", "MoO3", "Na15Sn4"])
def test_cache_matches_a_fresh_py4dstem_computation(name):
    spec = get_phase(name)
    cached = P._finalise(P._cached_builtin_raw(spec), 12.0)
    fresh = P._finalise(P._raw_rings(spec, 12.0), 12.0)
    assert len(cached) == len(fresh)
    np.testing.assert_allclose(cached["q_inv_nm"], fresh["q_inv_nm"], rtol=1e-9)
    np.testing.assert_array_equal(cached["multiplicity"], fresh["multiplicity"])
    assert list(cached["hkl"]) == list(fresh["hkl"])
    np.testing.assert_allclose(cached["intensity"], fresh["intensity"], rtol=1e-4, atol=1e-7)


def test_beyond_the_cache_is_computed():
    rings = ring_list("Au", 13.0)
    assert rings["q_inv_nm"].max() > 12.0  # 331 at 10.69, 420 at 10.97, 422 at 12.01, 333/511
    assert "333+511" in set(rings["hkl"]) or "511+333" in set(rings["hkl"])


# --- user phases ---------------------------------------------------------------------------------

NACL_SITES = [("Na", 0, 0, 0), ("Cl", 0.5, 0.5, 0.5)]


def test_add_phase_from_parameters_round_trips(library):
    spec = add_phase("NaCl", 225, 5.64, NACL_SITES, description="halite")
    assert spec.formula == "NaCl" and spec.source == "user"
    assert (library / "NaCl.json").is_file()
    assert "NaCl" in list_phases() and list_phases()[-1] == "NaCl"
    again = get_phase("nacl")
    assert again == spec
    rings = ring_list("NaCl", 10.0)
    assert list(rings["hkl"][:3]) == ["111", "200", "220"]
    assert rings["d_nm"].iloc[1] == pytest.approx(0.564 / 2)
    assert (library / "NaCl.rings.json").is_file()  # cached next to the phase
    assert ring_list(spec, 10.0).equals(rings)


def test_add_phase_rejects_bad_input(library):
    with pytest.raises(PhaseLibraryError, match="builtin"):
        add_phase("au", 225, 4.0, [("Au", 0, 0, 0)])
    with pytest.raises(PhaseLibraryError, match="reserved"):
        add_phase("amorphous", 225, 4.0, [("Au", 0, 0, 0)])
    with pytest.raises(PhaseLibraryError, match="invalid phase name"):
        add_phase("Na Cl", 225, 5.64, NACL_SITES)
    with pytest.raises(PhaseLibraryError, match="element"):
        add_phase("X1", 225, 5.64, [("Xx", 0, 0, 0)])
    with pytest.raises(PhaseLibraryError, match="positive"):
        add_phase("X1", 225, -5.0, NACL_SITES)
    with pytest.raises(PhaseLibraryError, match="230"):
        add_phase("X1", 999, 5.64, NACL_SITES)
    add_phase("X1", "F m -3 m", 5.64, NACL_SITES)
    with pytest.raises(PhaseLibraryError, match="already exists"):
        add_phase("x1", 225, 5.64, NACL_SITES)
    assert add_phase("X1", 225, 5.7, NACL_SITES, overwrite=True).cellpar[0] == 5.7


def test_remove_phase(library):
    add_phase("NaCl", 225, 5.64, NACL_SITES)
    ring_list("NaCl")
    remove_phase("NACL")
    assert "NaCl" not in list_phases()
    assert not any(library.iterdir())
    with pytest.raises(UnknownPhaseError):
        remove_phase("NaCl")
    with pytest.raises(PhaseLibraryError, match="builtin"):
        remove_phase("Au")


def test_add_phase_from_cif_written_by_ase(library, tmp_path):
    import ase.io
    from ase.spacegroup import crystal

    atoms = crystal(["Na", "Cl"], [(0, 0, 0), (0.5, 0.5, 0.5)], spacegroup=225,
                    cellpar=[5.64, 5.64, 5.64, 90, 90, 90])
    path = tmp_path / "halite.cif"
    ase.io.write(path, atoms)
    spec = add_phase_from_cif(path)
    assert spec.name == "NaCl" and spec.source == str(path.resolve())
    from_params = add_phase("NaClRef", 225, 5.64, NACL_SITES)
    a, b = ring_list(spec, 10.0), ring_list(from_params, 10.0)
    np.testing.assert_allclose(a["q_inv_nm"], b["q_inv_nm"], rtol=1e-6)
    np.testing.assert_allclose(a["intensity"], b["intensity"], rtol=1e-4)
    assert list(a["multiplicity"]) == list(b["multiplicity"])
    # a P1 cell, yet labelled by family (only the first of equally strong families is named)
    assert [h.split("+")[0] for h in a["hkl"]] == [h.split("+")[0] for h in b["hkl"]]
    assert get_phase("NaCl") == spec  # persisted


def test_partial_occupancy(library, tmp_path):
    disordered = add_phase("CuAu_dis", 225, 3.9, [("Cu", 0, 0, 0, 0.5), ("Au", 0, 0, 0, 0.5)])
    assert disordered.formula == "AuCu"
    rings = ring_list(disordered, 8.0)
    assert list(rings["hkl"]) == ["111", "200", "220"]  # fcc: no superstructure rings
    cif = tmp_path / "cuau.cif"
    cif.write_text(textwrap.dedent("""\
        data_CuAu
        _cell_length_a 3.9
        _cell_length_b 3.9
        _cell_length_c 3.9
        _cell_angle_alpha 90
        _cell_angle_beta 90
        _cell_angle_gamma 90
        _symmetry_space_group_name_H-M 'F m -3 m'
        loop_
        _atom_site_label
        _atom_site_type_symbol
        _atom_site_fract_x
        _atom_site_fract_y
        _atom_site_fract_z
        _atom_site_occupancy
        Cu1 Cu 0 0 0 0.5
        Au1 Au 0 0 0 0.5
        """))
    from_cif = add_phase_from_cif(cif, name="CuAu_cif")
    np.testing.assert_allclose(ring_list(from_cif, 8.0)["intensity"], rings["intensity"], rtol=1e-4)


def test_add_phase_from_cif_with_symmetry(library, tmp_path):
    path = tmp_path / "na2o.cif"
    path.write_text(textwrap.dedent("""\
        data_Na2O
        _cell_length_a 5.55
        _cell_length_b 5.55
        _cell_length_c 5.55
        _cell_angle_alpha 90
        _cell_angle_beta 90
        _cell_angle_gamma 90
        _symmetry_space_group_name_H-M 'F m -3 m'
        _symmetry_Int_Tables_number 225
        loop_
        _atom_site_label
        _atom_site_type_symbol
        _atom_site_fract_x
        _atom_site_fract_y
        _atom_site_fract_z
        O1 O 0 0 0
        Na1 Na 0.25 0.25 0.25
        """))
    spec = add_phase_from_cif(path)
    assert spec.name == "Na2O_cif"  # the formula, made unique (Na2O is builtin)
    assert spec.space_group == 225 and len(spec.sites) == 2
    mine, builtin = ring_list(spec, 10.0), ring_list("Na2O", 10.0)
    assert list(mine["hkl"]) == list(builtin["hkl"])
    np.testing.assert_allclose(mine["intensity"], builtin["intensity"], rtol=1e-4)


def test_bad_cif_names_the_file(library, tmp_path):
    bad = tmp_path / "broken.cif"
    bad.write_text("this is not a CIF file\n_cell_length_a banana\n")
    with pytest.raises(PhaseLibraryError) as err:
        add_phase_from_cif(bad)
    assert str(bad) in str(err.value)
    missing = tmp_path / "missing.cif"
    with pytest.raises(PhaseLibraryError, match="not found") as err:
        add_phase_from_cif(missing)
    assert str(missing) in str(err.value)
    assert list_phases() == DOMAIN_PHASES


def test_command_line_lists_phases(library):
    out = subprocess.run([sys.executable, "-m", "tem_operando.diffraction.phases", "--list"],
                         check=True, capture_output=True, text=True).stdout
    assert "Na15Sn4" in out and "I-43d" in out
