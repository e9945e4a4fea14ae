import pytest
from hypothesis import given
from hypothesis import strategies as st

from pcimgr.core.address import PciAddress
from pcimgr.core.errors import BadInput

addresses = st.builds(PciAddress, st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFF),
                      st.integers(0, 0x1F), st.integers(0, 7))


@pytest.mark.parametrize("text", ["04:00.0", "0000:04:00.0", "pci_0000_04_00_0",
                                  "PCI_0000_04_00_0", "0000:04:00.0".upper(), "0:04:00.0"])
def test_accepted_forms_are_one_address(text: str) -> None:
    assert PciAddress.parse(text) == PciAddress(0, 4, 0, 0)


def test_vmd_domain_above_ffff() -> None:
    a = PciAddress.parse("10000:e1:00.0")
    assert (a.domain, a.bus, str(a), a.nodedev_name) == (0x10000, 0xE1, "10000:e1:00.0",
                                                         "pci_10000_e1_00_0")


BAD = ["", " ", "04:00", "04:20.0", "04:00.8", "04:1f.9", "../04:00.0", "04:00.0/../x",
       " 04:00.0", "04:00.0 ", "04:00.0\n", "004:00.0", "100000000:04:00.0", "4:00.0",
       "pci_0000_04_00", "pci_04_00_0", "0000:04:00:0", "gg:00.0", "04.00.0", "-1:00.0",
       "04:00.0;rm", "０４:00.0"]


@pytest.mark.parametrize("text", BAD)
def test_malformed_addresses_rejected_naming_the_forms(text: str) -> None:
    with pytest.raises(BadInput) as e:
        PciAddress.parse(text)
    assert "04:00.0, 0000:04:00.0 or pci_0000_04_00_0" in str(e.value)
    assert "\n" not in str(e.value)


@given(addresses)
def test_format_parse_round_trip(a: PciAddress) -> None:
    assert PciAddress.parse(str(a)) == a
    assert PciAddress.parse(a.nodedev_name) == a
    assert PciAddress.parse(str(a).upper()) == a
    if a.domain == 0:
        assert PciAddress.parse(a.short) == a


@given(addresses)
def test_routing_id_round_trip(a: PciAddress) -> None:
    assert PciAddress.from_routing_id(a.domain, a.routing_id) == a


def test_out_of_range_construction_rejected() -> None:
    with pytest.raises(BadInput):
        PciAddress(0, 0, 0x20, 0)
