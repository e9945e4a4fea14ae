"""Host-driver control: detach, rebind, bind, unbind, and the safety rules."""
