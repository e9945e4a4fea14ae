# pcimgr export proxmox: run once on any node of the cluster
pvesh create /cluster/mapping/pci --id pci_8086_105e_vfio --description 'pcimgr pool pci_8086_105e_vfio' \
  --map node=node1,path=0000:04:00.0,id=8086:105e,subsystem-id=8086:115e,iommugroup=5 \
  --map node=node1,path=0000:04:00.1,id=8086:105e,subsystem-id=8086:115e,iommugroup=5
pvesh create /cluster/mapping/pci --id sriov_8086_10ca_vfio --description 'pcimgr pool sriov_8086_10ca_vfio' \
  --map node=node1,path=0000:05:10.0,id=8086:10ca,subsystem-id=8086:a03c,iommugroup=15 \
  --map node=node1,path=0000:05:10.2,id=8086:10ca,subsystem-id=8086:a03c,iommugroup=16 \
  --map node=node1,path=0000:05:10.4,id=8086:10ca,subsystem-id=8086:a03c,iommugroup=17 \
  --map node=node1,path=0000:05:10.6,id=8086:10ca,subsystem-id=8086:a03c,iommugroup=18
