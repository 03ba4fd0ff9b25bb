// Accept stays disabled until the customer agreement is ticked (the server checks too).
document.addEventListener("DOMContentLoaded", () => {
  const agreement = document.getElementById("agreement");
  const accept = document.getElementById("accept");
  if (!agreement || !accept) return;
  const sync = () => { accept.disabled = !agreement.checked; };
  agreement.addEventListener("change", sync);
  sync();
});
