console.log("ok - placeholder")
