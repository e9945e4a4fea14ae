// SPDX-License-Identifier: GPL-2.0-only
/*
 * pcimgr_test_vfio_pci: the smallest VFIO variant driver, for pcimgr's lab only.
 *
 * vfio-pci itself (drivers/vfio/pci/vfio_pci.c of Linux 6.1) on vfio_pci_core,
 * under another name and for one function: the igb VF (8086:10ca) that QEMU's
 * igb makes. PCI_DRIVER_OVERRIDE_DEVICE_VFIO makes depmod write
 *   alias vfio_pci:v00008086d000010CAsv*sd*bc*sc*i* pcimgr_test_vfio_pci
 * and keeps the driver from binding by a probe: only through driver_override,
 * as every variant (mlx5_vfio_pci, pds_vfio_pci, ...) binds.
 */
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/vfio_pci_core.h>

static int pcimgr_test_open_device(struct vfio_device *core_vdev)
{
	struct vfio_pci_core_device *vdev =
		container_of(core_vdev, struct vfio_pci_core_device, vdev);
	int ret;

	ret = vfio_pci_core_enable(vdev);
	if (ret)
		return ret;
	vfio_pci_core_finish_enable(vdev);
	return 0;
}

static const struct vfio_device_ops pcimgr_test_ops = {
	.name		= "pcimgr-test-vfio-pci",
	.init		= vfio_pci_core_init_dev,
	.release	= vfio_pci_core_release_dev,
	.open_device	= pcimgr_test_open_device,
	.close_device	= vfio_pci_core_close_device,
	.ioctl		= vfio_pci_core_ioctl,
	.device_feature	= vfio_pci_core_ioctl_feature,
	.read		= vfio_pci_core_read,
	.write		= vfio_pci_core_write,
	.mmap		= vfio_pci_core_mmap,
	.request	= vfio_pci_core_request,
	.match		= vfio_pci_core_match,
};

static int pcimgr_test_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct vfio_pci_core_device *vdev;
	int ret;

	vdev = vfio_alloc_device(vfio_pci_core_device, vdev, &pdev->dev, &pcimgr_test_ops);
	if (IS_ERR(vdev))
		return PTR_ERR(vdev);
	dev_set_drvdata(&pdev->dev, vdev);
	ret = vfio_pci_core_register_device(vdev);
	if (ret)
		vfio_put_device(&vdev->vdev);
	return ret;
}

static void pcimgr_test_remove(struct pci_dev *pdev)
{
	struct vfio_pci_core_device *vdev = dev_get_drvdata(&pdev->dev);

	vfio_pci_core_unregister_device(vdev);
	vfio_put_device(&vdev->vdev);
}

static const struct pci_device_id pcimgr_test_table[] = {
	{ PCI_DRIVER_OVERRIDE_DEVICE_VFIO(0x8086, 0x10ca) },  /* 82576 VF */
	{}
};
MODULE_DEVICE_TABLE(pci, pcimgr_test_table);

static struct pci_driver pcimgr_test_driver = {
	.name			= KBUILD_MODNAME,
	.id_table		= pcimgr_test_table,
	.probe			= pcimgr_test_probe,
	.remove			= pcimgr_test_remove,
	.err_handler		= &vfio_pci_core_err_handlers,
	.driver_managed_dma	= true,
};
module_pci_driver(pcimgr_test_driver);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("pcimgr's lab: a minimal VFIO variant driver for the igb VF");
