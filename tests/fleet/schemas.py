"""JSON schemas of what the Kubernetes consumers read, built from their documented fields:
the SR-IOV network device plugin's README ("Config parameters", "Device selectors") and
KubeVirt's API reference (v1.PermittedHostDevices, v1.PciHostDevice,
v1.MediatedHostDevice)."""

_STRINGS = {"type": "array", "items": {"type": "string"}}
_COMMON = {"vendors": _STRINGS, "devices": _STRINGS, "drivers": _STRINGS,
           "pciAddresses": _STRINGS, "acpiIndexes": _STRINGS}
_NET = _COMMON | {"pfNames": _STRINGS, "rootDevices": _STRINGS, "linkTypes": _STRINGS,
                  "ddpProfiles": _STRINGS, "pKeys": _STRINGS, "isRdma": {"type": "boolean"},
                  "needVhostNet": {"type": "boolean"},
                  "vdpaType": {"enum": ["vhost", "virtio"]}}


def _selector(props: dict) -> dict:
    one = {"type": "object", "properties": props, "additionalProperties": False}
    return {"oneOf": [one, {"type": "array", "items": one}]}


_RESOURCE = {
    "type": "object",
    "required": ["resourceName"],
    "properties": {
        "resourceName": {"type": "string", "pattern": "^[a-zA-Z0-9_]+$"},
        "resourcePrefix": {"type": "string", "pattern": "^[a-zA-Z0-9._-]+$"},
        "deviceType": {"enum": ["netDevice", "accelerator", "auxNetDevice"]},
        "excludeTopology": {"type": "boolean"},
        "additionalInfo": {"type": "object"},
        "selectors": {},
    },
    "additionalProperties": False,
    # the selectors a pool may use depend on its deviceType (netDevice is the default)
    "if": {"properties": {"deviceType": {"const": "accelerator"}}, "required": ["deviceType"]},
    "then": {"properties": {"selectors": _selector(_COMMON)}},
    "else": {"properties": {"selectors": _selector(_NET)}},
}

DEVICE_PLUGIN = {"type": "object", "required": ["resourceList"], "additionalProperties": False,
                 "properties": {"resourceList": {"type": "array", "items": _RESOURCE}}}

_PCI_HOST_DEVICE = {
    "type": "object",
    "required": ["pciVendorSelector", "resourceName"],
    "properties": {
        "pciVendorSelector": {"type": "string", "pattern": "^[0-9A-Fa-f]{4}:[0-9A-Fa-f]{4}$"},
        "resourceName": {"type": "string", "pattern": "^[a-zA-Z0-9._-]+/[a-zA-Z0-9._-]+$"},
        "externalResourceProvider": {"type": "boolean"},
    },
    "additionalProperties": False,
}

_MEDIATED_DEVICE = {  # v1.MediatedHostDevice
    "type": "object",
    "required": ["mdevNameSelector", "resourceName"],
    "properties": {
        "mdevNameSelector": {"type": "string", "minLength": 1},
        "resourceName": {"type": "string", "pattern": "^[a-zA-Z0-9._-]+/[a-zA-Z0-9._-]+$"},
        "externalResourceProvider": {"type": "boolean"},
    },
    "additionalProperties": False,
}

KUBEVIRT_PATCH = {
    "type": "object", "required": ["spec"], "additionalProperties": False,
    "properties": {"spec": {"type": "object", "required": ["configuration"], "properties": {
        "configuration": {"type": "object", "required": ["permittedHostDevices"], "properties": {
            "permittedHostDevices": {
                "type": "object", "additionalProperties": False,
                "properties": {"pciHostDevices": {"type": "array", "items": _PCI_HOST_DEVICE},
                               "mediatedDevices": {"type": "array",
                                                   "items": _MEDIATED_DEVICE},
                               "usb": {"type": "array"}}}}}}}},
}
