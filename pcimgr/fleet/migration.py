"""VFIO variant drivers that implement live migration (VFIO_MIGRATION_STOP_COPY in their
vfio_device_ops' migration ops), with where that is stated: what Nova's
`live_migratable` may say yes to. Data, kept by hand: a driver not listed is not
migratable as far as pcimgr knows.
"""

from __future__ import annotations

LIVE_MIGRATION = {
    "mlx5_vfio_pci": "Linux 5.18, drivers/vfio/pci/mlx5/main.c (mlx5vf_pci_mig_ops)",
    "hisi_acc_vfio_pci": "Linux 5.18, drivers/vfio/pci/hisilicon/hisi_acc_vfio_pci.c",
    "pds_vfio_pci": "Linux 6.6, drivers/vfio/pci/pds/vfio_dev.c (pds_vfio_lm_ops)",
    "qat_vfio_pci": "Linux 6.10, drivers/vfio/pci/qat/main.c (qat_vf_pci_mig_ops)",
    "virtio_vfio_pci": "Linux 6.13, drivers/vfio/pci/virtio/migrate.c",
}


def live_migratable(driver: str) -> bool:
    return driver.replace("-", "_") in LIVE_MIGRATION
